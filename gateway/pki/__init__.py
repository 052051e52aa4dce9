"""The operator's terminal CA (`gateway pki`): the certificates every terminal presents over TLS, the gateway's
own, and the revocation list the gateway reloads. X.509 through the `cryptography` library."""
