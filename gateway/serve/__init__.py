"""The request path: wiring, the Twisted adapter, dispatch, settling end to end, the request's reads."""
