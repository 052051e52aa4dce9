"""Every status code with the sentence a clerk reads: what happened and what to do next.

Handlers may add detail (a line number, the tries left), but each code has a default here, so no
refusal ever goes out without an actionable message. `docs/protocol.md` lists the same table; a test
keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.protocol.messages import pb


@dataclass(frozen=True)
class StatusText:
    zh: str
    en: str


# The status codes by name (`StatusCode.STATUS_CODE_OK`): what the layers that decide outcomes without building
# messages (the ledger, the rules) import, instead of the generated messages.
StatusCode = pb.StatusCode
S = StatusCode

STATUS_TEXTS: dict[int, StatusText] = {
    S.STATUS_CODE_OK: StatusText("成功", "OK"),
    # Envelope and session.
    S.STATUS_CODE_BAD_REQUEST: StatusText(
        "请求格式错误，请检查终端软件版本或联系终端厂商",
        "Malformed request: check the terminal software version or call the terminal vendor",
    ),
    S.STATUS_CODE_UNSUPPORTED_MESSAGE: StatusText(
        "本网关不支持该交易，请联系系统管理员",
        "This gateway does not offer that transaction: call the system administrator",
    ),
    S.STATUS_CODE_FRAME_TOO_LARGE: StatusText(
        "报文过长，连接已关闭，请联系终端厂商",
        "Message too long; the connection is closed: call the terminal vendor",
    ),
    S.STATUS_CODE_NOT_SIGNED_IN: StatusText(
        "终端未签到，请先签到", "Terminal not signed in: sign in first"
    ),
    S.STATUS_CODE_UNKNOWN_TERMINAL: StatusText(
        "终端未登记或密钥错误，请联系系统管理员核对终端编号和密钥",
        "Terminal not registered or wrong credential: ask the administrator to check the terminal id "
        "and credential",
    ),
    S.STATUS_CODE_TERMINAL_DISABLED: StatusText(
        "终端已停用，请联系系统管理员", "Terminal disabled: call the system administrator"
    ),
    S.STATUS_CODE_TERMINAL_MISMATCH: StatusText(
        "终端编号与签到时不一致，请重新签到",
        "Terminal id differs from the one signed in on this connection: sign in again",
    ),
    S.STATUS_CODE_TOO_MANY_SESSIONS: StatusText(
        "该终端已有过多连接，请关闭其他连接后重试",
        "This terminal has too many open sessions: close the others and retry",
    ),
    S.STATUS_CODE_TOO_MANY_CONNECTIONS: StatusText(
        "网关繁忙，请稍后重试", "The gateway is at its connection limit: retry in a moment"
    ),
    S.STATUS_CODE_IDLE_TIMEOUT: StatusText(
        "连接空闲超时已断开，请重新连接并签到",
        "Connection closed after being idle: reconnect and sign in",
    ),
    S.STATUS_CODE_INSTITUTION_DISABLED: StatusText(
        "本机构暂停医保结算，请联系医保经办机构",
        "This institution is suspended from settlement: contact the insurance agency",
    ),
    S.STATUS_CODE_CERTIFICATE_MISMATCH: StatusText(
        "终端编号与本连接的TLS证书不符，请使用本终端自己的证书签到，或联系系统管理员",
        "The terminal id differs from the one this connection's TLS certificate names: sign in with this "
        "terminal's own certificate, or call the system administrator",
    ),
    S.STATUS_CODE_SIGN_IN_LOCKED: StatusText(
        "签到失败次数过多，已暂时锁定，请稍后再试或联系系统管理员核对终端编号和密钥",
        "Too many failed sign-ins: signing in is locked for a while; try again later or ask the administrator "
        "to check the terminal id and credential",
    ),
    S.STATUS_CODE_SEND_TIME_OUT_OF_WINDOW: StatusText(
        "报文发送时间与网关时间相差过大，交易未处理。请校准终端时钟后用相同报文编号重新发送",
        "The request's send_time is too far from the gateway's clock; nothing was done: set the terminal's clock "
        "right and send it again with the same message id",
    ),
    S.STATUS_CODE_SIGN_IN_TIMEOUT: StatusText(
        "连接后未在规定时间内签到，连接已关闭，请重新连接并签到",
        "Not signed in in time after connecting; the connection is closed: reconnect and sign in",
    ),
    # Card.
    S.STATUS_CODE_CARD_NOT_PRESENT: StatusText(
        "未检测到卡片，请插入社会保障卡", "No card in the reader: insert the social security card"
    ),
    S.STATUS_CODE_CARD_UNREADABLE: StatusText(
        "卡片无法读取，请重新插卡；仍不能读取请持卡到社保卡服务网点检测",
        "The card cannot be read: insert it again; if it still fails, take it to a card agency",
    ),
    S.STATUS_CODE_CARD_EXPIRED: StatusText(
        "卡片已过有效期，请持身份证到社保卡服务网点换卡",
        "The card has expired: bring ID to a card agency for a new card",
    ),
    S.STATUS_CODE_CARD_LOST: StatusText(
        "卡片已挂失，不能结算。请持身份证和卡片到社保卡服务网点解挂或补卡",
        "The card is reported lost and cannot be used: bring ID and the card to a card agency to lift "
        "the report, or get a replacement",
    ),
    S.STATUS_CODE_CARD_REPLACED: StatusText(
        "该卡已补换，旧卡不能再使用，请使用新卡",
        "This card was replaced and can no longer be used: use the new card",
    ),
    S.STATUS_CODE_OLD_MEDICAL_CARD_CANCELLED: StatusText(
        "原医保IC卡已因新社会保障卡启用而注销，请使用社会保障卡",
        "The old medical IC card was cancelled when the new social security card was first used: "
        "use the social security card",
    ),
    S.STATUS_CODE_CARD_NOT_REGISTERED: StatusText(
        "该卡未在医保系统登记，请持卡到社保卡服务网点查询",
        "The card is not registered with medical insurance: take it to a card agency",
    ),
    S.STATUS_CODE_READER_UNAVAILABLE: StatusText(
        "读卡器不可用，请检查读卡器连接后重试",
        "The card reader is unavailable: check the reader's connection and retry",
    ),
    S.STATUS_CODE_CARD_REMOVED: StatusText(
        "读卡过程中卡片被拔出，请重新插卡后重试",
        "The card was removed during the operation: insert it again and retry",
    ),
    # PIN.
    S.STATUS_CODE_PIN_REQUIRED: StatusText(
        "需输入社保卡密码（初始密码000000），请持卡人输入后重新提交",
        "The card's PIN is needed (outside the holder's home city, or at a self-service kiosk): ask the holder "
        "to enter it (initially 000000) and send again",
    ),
    S.STATUS_CODE_PIN_WRONG: StatusText(
        "密码错误，请重新输入；连续错误6次卡片将被锁定",
        "Wrong PIN: enter it again; six wrong PINs in a row lock the card",
    ),
    S.STATUS_CODE_PIN_LOCKED: StatusText(
        "密码已锁定（连续输错6次）。请持本人身份证原件和社保卡到任一社保卡服务网点重置密码",
        "PIN locked after 6 wrong PINs: bring the original ID document and the card to any card "
        "agency of the city to reset it",
    ),
    # Eligibility.
    S.STATUS_CODE_FILING_REQUIRED: StatusText(
        "未办理异地就医备案，不能在本地结算。请先到参保地医保经办机构办理转外就医或异地居住备案",
        "No filing for care elsewhere: the holder must file for transfer or residence elsewhere at "
        "the home insurance agency first",
    ),
    S.STATUS_CODE_SPECIAL_DISEASE_NOT_SUPPORTED: StatusText(
        "省内异地就医暂不支持特殊病种结算，请按规定回参保地报销",
        "Special diseases cannot be settled outside the home city: pay and claim at the home agency",
    ),
    S.STATUS_CODE_OUTSIDE_PROVINCE: StatusText(
        "省外参保人员不能在本网关结算，请按跨省异地就医规定办理",
        "Insured outside Zhejiang: this gateway cannot settle; follow the inter-provincial procedure",
    ),
    S.STATUS_CODE_INSTITUTION_NOT_DESIGNATED: StatusText(
        "本机构不是省内异地就医定点结算机构，请到定点机构就医或回参保地报销",
        "This institution is not designated for cross-region settlement: use a designated one or "
        "claim at the home agency",
    ),
    S.STATUS_CODE_MEDICAL_TYPE_NOT_ALLOWED: StatusText(
        "本机构不能办理该医疗类别", "This institution cannot settle that medical type"
    ),
    # Person look-up.
    S.STATUS_CODE_PERSON_NOT_FOUND: StatusText(
        "查无此参保人员，请持身份证到医保经办机构查询",
        "No insured person found: the holder should ask the insurance agency, with ID",
    ),
    S.STATUS_CODE_PERSON_ID_MISTYPED: StatusText(
        "身份证号码输入有误，请核对后重新输入",
        "The ID number is mistyped: check it and enter it again",
    ),
    S.STATUS_CODE_PERSON_NOT_COVERED: StatusText(
        "该人员不在社保卡发放范围内，请到医保经办机构咨询",
        "The person is outside the card's covered scope: ask the insurance agency",
    ),
    S.STATUS_CODE_PERSON_ID_MISMATCH: StatusText(
        "系统中的身份证号码与证件不一致，请持身份证到参保地社保经办机构核实",
        "The ID number on record differs: bring ID to the insurance agency to correct it",
    ),
    S.STATUS_CODE_PERSON_BANK_ACCOUNT_CHANGED: StatusText(
        "银行账号已变更但未登记，请持身份证和社保卡到社保经办机构登记",
        "The bank account changed but was not registered: register it at the insurance agency with "
        "ID and card",
    ),
    S.STATUS_CODE_PERSON_ID_CHANGED: StatusText(
        "身份证号码已变更但未登记，请持新旧身份证明到社保经办机构变更",
        "The ID number changed but was not registered: bring proof of both numbers to the insurance "
        "agency",
    ),
    S.STATUS_CODE_PERSON_GOVERNMENT_STAFF: StatusText(
        "市级机关事业单位人员，请到所属单位或市级经办机构办理",
        "City government staff are served by their own agency: contact the employer or the city-level "
        "agency",
    ),
    S.STATUS_CODE_PERSON_HMT_OR_FOREIGN: StatusText(
        "港澳台及外籍从业人员，请持有效证件到社保经办机构办理",
        "Hong Kong, Macao, Taiwan or foreign employee: apply at the insurance agency with a valid "
        "document",
    ),
    S.STATUS_CODE_PERSON_MULTIPLE_ACCOUNTS: StatusText(
        "一人多个参保账户，请持身份证到社保经办机构合并账户",
        "The person has several insurance accounts: merge them at the insurance agency with ID",
    ),
    S.STATUS_CODE_PERSON_DUPLICATE_ID: StatusText(
        "身份证号码重复，请持身份证到公安机关和社保经办机构核实",
        "Duplicate ID number: the holder must have it corrected at the police and the insurance "
        "agency",
    ),
    # Transactions.
    S.STATUS_CODE_DUPLICATE_MESSAGE_ID: StatusText(
        "报文编号已使用且内容不同，请使用新的报文编号",
        "This message id was already used with different content: use a new message id",
    ),
    S.STATUS_CODE_ORIGINAL_NOT_FOUND: StatusText(
        "原交易不存在，请核对交易编号", "Original transaction not found: check its id"
    ),
    S.STATUS_CODE_ALREADY_REVERSED: StatusText(
        "原交易已冲正，无需重复操作", "The original was already reversed: nothing more to do"
    ),
    S.STATUS_CODE_ALREADY_REVOKED: StatusText(
        "原交易已撤销，无需重复操作", "The original was already revoked: nothing more to do"
    ),
    S.STATUS_CODE_AMOUNT_OUT_OF_RANGE: StatusText(
        "金额超出允许范围，请核对费用", "Amount out of the allowed range: check the bill"
    ),
    S.STATUS_CODE_REVOKE_NOT_ALLOWED: StatusText(
        "该交易不能撤销（超出撤销期限或非本机构交易），请到医保经办机构办理",
        "This settlement cannot be revoked here (past the window, or another institution's): "
        "contact the insurance agency",
    ),
    S.STATUS_CODE_MESSAGE_ID_REVERSED: StatusText(
        "该报文编号已被冲正，请使用新的报文编号重新发起",
        "This message id was reversed before it arrived: start again with a new message id",
    ),
    # Gateway.
    S.STATUS_CODE_TEMPORARILY_UNAVAILABLE: StatusText(
        "系统繁忙，请稍后用相同报文编号重试",
        "Temporarily unavailable: retry with the same message id in a moment",
    ),
    S.STATUS_CODE_INTERNAL_ERROR: StatusText(
        "系统内部错误，结果未知。请用相同报文编号查询或冲正，并联系系统管理员",
        "Internal error, outcome unknown: query or reverse with the same message id and call the "
        "system administrator",
    ),
    S.STATUS_CODE_GATEWAY_SHUTTING_DOWN: StatusText(
        "网关正在停止或重启，本次交易未处理，读卡器无需检查：请稍后用相同报文编号重试",
        "The gateway is shutting down or restarting; nothing was done and the card reader is fine: retry the "
        "same request with the same message id in a moment",
    ),
}


def status_text(code: int) -> StatusText:
    return STATUS_TEXTS[code]


# Every answer's status is named for the metrics: a dictionary look-up, where protobuf's Name() takes a microsecond.
_NAMES: dict[int, str] = {value.number: value.name for value in pb.StatusCode.DESCRIPTOR.values}


def status_name(code: int) -> str:
    name = _NAMES.get(code)
    return name if name is not None else str(pb.StatusCode.Name(code))  # type: ignore[arg-type]  # raises, unknown
