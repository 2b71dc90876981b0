"""Every request-side MUST of RFC 9112 (and the RFC 9110 rules it leans on): what
preforkd does, and the tests that show it.

`tests` names cases of the smuggling corpus (tests/smuggling.py, run over real
sockets) or, as "file::name", a test function or a parametrised case of the unit
tests (run in every chunking). tests/unit/test_rfc_table.py checks that each one
exists, and that the README's error table has every status answered here.
Where the RFC leaves a choice, `does` names the side taken (the strict one,
unless said why not).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    section: str
    rule: str
    does: str
    status: int  # the answer when the rule is broken (0: nothing to refuse)
    tests: tuple[str, ...]


C = "tests/unit/test_http_connection.py::"
P = "tests/unit/test_http_protocol.py::"
I = "tests/integration/test_http.py::"  # noqa: E741

RULES = (
    # -- message format and the request line -------------------------------------------
    Rule("RFC 9112 §2.2", "a bare CR, or a bare LF as a line terminator", "refused (the strict "
         "choice: the RFC allows LF alone to be read as CRLF)", 400,
         ("request-line-bare-lf", "request-line-bare-cr", "fields-bare-lf-terminator",
          "fields-bare-cr-terminator", "chunk-size-bare-lf", "chunk-data-bare-cr-after")),
    Rule("RFC 9112 §2.2", "whitespace between the start line and the first field",
         "refused (MUST reject or drop the lines: reject)", 400,
         ("fields-space-before-first-field", "fields-tab-before-first-field")),
    Rule("RFC 9112 §2.2", "empty lines before a request", "ignored (SHOULD ignore at least one)",
         0, (C + "leading-crlf", "pipeline-bodies-then-get")),
    Rule("RFC 9112 §3", "request-line = method SP request-target SP HTTP-version",
         "tabs, extra words, leading space refused; a double SP is read on word boundaries "
         "(the MAY llhttp takes: SP is in none of the three parts, so no reading differs)",
         400, ("request-line-tab-after-method", "request-line-extra-word",
               "request-line-leading-space", "request-line-two-spaces")),
    Rule("RFC 9110 §9.1, §16.1", "methods are an open set of tokens; a non-token is malformed",
         "a token the parser does not know: 501 (however the bytes are split); not a token: "
         "400", 501, ("request-line-unknown-method", "request-line-lowercase-method",
                      "request-line-dash-method", "request-line-method-not-a-token",
                      "pipeline-unknown-method-second", C + "unknown-method-after-chunked")),
    Rule("RFC 9112 §2.3, RFC 9110 §2.5", "HTTP-version = HTTP/DIGIT.DIGIT, case-sensitive",
         "anything else refused", 400,
         ("request-line-lowercase-http", "request-line-missing-minor",
          "request-line-two-digit-major", "request-line-http09-no-version")),
    Rule("RFC 9110 §2.5, §6.2", "a higher minor version is served as the highest one we "
         "implement", "HTTP/1.2 .. 1.9 served as HTTP/1.1", 0,
         ("request-line-http12-as-11", "request-line-http19-as-11",
          C + "http12-served-as-11")),
    Rule("RFC 9110 §15.6.6", "a major version we do not implement", "505 (also the HTTP/2 "
         "connection preface: preforkd speaks no h2)", 505,
         ("request-line-http20", "request-line-http30", "upgrade-http2-preface")),
    Rule("RFC 9112 §3", "a request line longer than we accept", "414 past "
         "max_request_line_bytes", 414, ("target-too-long", "target-long-but-allowed")),
    # -- the request target -------------------------------------------------------------
    Rule("RFC 9112 §3.2", "the request target has no fragment", "refused", 400,
         ("target-fragment", "target-fragment-after-query", "target-absolute-fragment")),
    Rule("RFC 9112 §3.2", "no whitespace, controls or non-ASCII bytes in the target",
         "refused", 400, ("target-control-byte", "target-nul", "target-del", "target-utf8",
                          "target-space-inside")),
    Rule("RFC 9112 §3.2.1", "origin-form starts with /", "anything else that is not one of the "
         "forms below is refused", 400, ("target-relative-path",)),
    Rule("RFC 9112 §3.2.2", "absolute-form: the server MUST use the target's authority as the "
         "host, whatever Host says", "Host replaced by the target's authority", 0,
         ("target-absolute-form", "target-absolute-form-port", "target-absolute-form-ipv6",
          C + "absolute-form")),
    Rule("RFC 9110 §4.2.1, §4.2.2", "an http(s) URI with an empty host, a bad port, userinfo "
         "or another scheme", "refused", 400,
         ("target-absolute-empty-host", "target-absolute-port-too-big",
          "target-absolute-invalid-authority", "target-absolute-userinfo",
          "target-absolute-ftp-scheme")),
    Rule("RFC 9112 §3.2.3, RFC 9110 §9.3.6", "authority-form is only for CONNECT; an origin "
         "server that does not tunnel refuses CONNECT", "501 for every CONNECT", 501,
         ("target-authority-form-connect", "target-connect-origin-form",
          "upgrade-connect-with-upgrade")),
    Rule("RFC 9112 §3.2.4", "asterisk-form is only for OPTIONS", "OPTIONS * served, any other "
         "method with * refused", 400, ("target-asterisk-options", "target-asterisk-get")),
    # -- Host ---------------------------------------------------------------------------
    Rule("RFC 9112 §3.2", "an HTTP/1.1 request without Host, with two Host fields, or with an "
         "invalid Host value: MUST respond 400", "400 (an empty Host is valid; HTTP/1.0 may "
         "omit it)", 400, ("host-missing", "host-twice-equal", "host-twice-different",
                           "host-space-inside", "host-list", "host-port-too-big",
                           "host-bad-ipv6", "host-empty", "host-http10-without-host")),
    Rule("RFC 9110 §4.2.4, §7.2", "no userinfo in Host", "refused", 400, ("host-userinfo",)),
    # -- fields -------------------------------------------------------------------------
    Rule("RFC 9112 §5.1", "no whitespace between a field name and the colon: MUST respond 400",
         "400", 400, ("fields-space-before-colon", "fields-tab-before-colon",
                      "fields-host-space-before-colon", "transfer-encoding-space-before-colon")),
    Rule("RFC 9110 §5.1, §5.6.2", "a field name is a token", "empty names and other bytes "
         "refused", 400, ("fields-empty-name", "fields-name-not-a-token", "fields-space-in-name",
                          "fields-high-byte-in-name", "fields-no-colon")),
    Rule("RFC 9110 §5.5", "NUL, CR, LF and other controls in a value: MUST reject or replace",
         "refused (never replaced: a replacement is a second reading)", 400,
         ("fields-nul-in-value", "fields-cr-in-value", "fields-lf-in-value", "fields-vt-in-value",
          "fields-ff-in-value", "fields-del-in-value")),
    Rule("RFC 9110 §5.5", "obs-text in a value is opaque data", "passed on as it came: never "
         "stripped, never treated as whitespace (\\x85, \\xa0)", 0,
         ("fields-obs-text-nel", "fields-obs-text-nbsp-around", "fields-obs-text-high")),
    Rule("RFC 9110 §5.5", "leading and trailing OWS are not part of the value", "removed", 0,
         ("fields-ows-around-value", "fields-only-ows-value")),
    Rule("RFC 9112 §5.2", "obs-fold: reject with 400 or replace with SP", "refused", 400,
         ("fields-obs-fold-space", "fields-obs-fold-tab", "transfer-encoding-obs-fold")),
    Rule("RFC 9110 §5.3", "a field that is not a list may come once", "a second Host or "
         "Content-Type refused", 400, ("fields-two-content-types", "host-twice-equal")),
    Rule("RFC 9110 §5.4", "a header section larger than we accept", "431 past "
         "max_header_bytes or max_header_count", 431,
         ("fields-too-many", "fields-section-too-large", C + "test_limits")),
    # -- message body -------------------------------------------------------------------
    Rule("RFC 9112 §6.1", "Transfer-Encoding with chunked not final, or a coding we do not "
         "know", "chunked alone is served; a list of real codings ending in chunked: 501; "
         "anything else (lists, empty elements, repeats, chunked not last): 400, never "
         "guessed", 400, ("transfer-encoding-upper-case", "transfer-encoding-gzip-chunked",
                         "transfer-encoding-chunked-not-last", "transfer-encoding-leading-comma",
                         "transfer-encoding-two-fields-chunked", "transfer-encoding-identity")),
    Rule("RFC 9112 §6.1", "Transfer-Encoding in an HTTP/1.0 request is faulty framing",
         "refused", 400, ("transfer-encoding-http10", C + "chunked-in-http10")),
    Rule("RFC 9112 §6.1, §6.3", "Transfer-Encoding with Content-Length: MAY reject, and close "
         "after", "refused, then closed", 400,
         ("content-length-and-chunked", "content-length-after-chunked",
          "pipeline-te-and-cl-smuggle")),
    Rule("RFC 9112 §6.3, RFC 9110 §8.6", "Content-Length = 1*DIGIT; an invalid one is "
         "unrecoverable: 400 and close", "leading zeros served; signs, hex, spaces, "
         "non-ASCII digits, lists (equal or not), two fields, overflow refused", 400,
         ("content-length-leading-zeros", "content-length-plus", "content-length-hex",
          "content-length-arabic-digit", "content-length-list-equal",
          "content-length-two-fields-equal", "content-length-overflow")),
    Rule("RFC 9112 §6.3", "a body shorter than its Content-Length: the connection closed "
         "early is an incomplete message", "400", 400,
         ("content-length-body-cut-by-eof", "chunk-data-cut-by-eof")),
    Rule("RFC 9110 §15.5.14", "a body larger than we accept", "413 (before reading it when "
         "Content-Length or a chunk size says so)", 413,
         ("content-length-too-large", "chunk-size-total-too-large", C + "chunk-too-large")),
    Rule("RFC 9112 §6.3", "the body is framed by Content-Length or chunked even when the "
         "request asks to upgrade", "framed as usual; the upgrade is refused by answering, "
         "then closing", 0, ("upgrade-foo-body", "upgrade-foo-connection-upgrade-body",
                            "upgrade-foo-chunked-body", C + "upgrade-with-body")),
    Rule("RFC 9112 §7.1", "chunk-size = 1*HEXDIG", "1 to 16 hex digits; prefixes, signs, "
         "spaces, underscores refused", 400,
         ("chunk-size-leading-zeros", "chunk-size-17-digits", "chunk-size-0x",
          "chunk-size-plus", "chunk-size-trailing-space", "chunk-size-underscore")),
    Rule("RFC 9112 §7.1.1, RFC 9110 §5.6.3", "BWS around a chunk extension's ; and =: MUST "
         "accept and remove", "accepted; extensions checked, then ignored", 0,
         ("chunk-ext-bws-before-semicolon", "chunk-ext-bws-after-semicolon",
          "chunk-ext-bws-around-equals", "chunk-ext-quoted-pair", C + "chunk-ext-bws")),
    Rule("RFC 9112 §7.1.1", "a chunk extension is token [= token / quoted-string]",
         "anything else refused", 400, ("chunk-ext-empty-name", "chunk-ext-missing-value",
                                         "chunk-ext-unterminated-quote", "chunk-ext-nul-in-name")),
    Rule("RFC 9112 §7.1", "chunk-data is followed by CRLF", "exactly CRLF, else refused", 400,
         ("chunk-data-missing-crlf", "chunk-data-extra-byte", "chunk-data-longer-than-size",
          "chunk-data-shorter-than-size")),
    Rule("RFC 9112 §7.1.2, RFC 9110 §6.5", "trailer fields use the field syntax; framing "
         "fields in a trailer have no effect", "checked like header fields, then dropped (the "
         "app never sees them)", 400,
         ("chunk-data-trailer-dropped", "chunk-data-trailer-content-length-ignored",
          "chunk-data-trailer-space-before-colon", "chunk-data-trailer-obs-fold")),
    # -- connection management ----------------------------------------------------------
    Rule("RFC 9112 §9.3", "persistence: HTTP/1.1 by default, HTTP/1.0 with keep-alive, "
         "and the 1.0 answer says so", "as stated", 0,
         ("control-http10-keep-alive", "pipeline-http10-then-get",
          P + "test_http10_keepalive_stream_says_keep_alive_and_gets_no_100_continue")),
    Rule("RFC 9112 §9.3.2", "pipelined requests are answered in order", "in order; those "
         "before an invalid one are answered, nothing after it", 400,
         ("pipeline-three-gets", "pipeline-bad-second", "pipeline-bad-after-chunked",
          P + "test_pipelined_responses_in_order")),
    Rule("RFC 9112 §9.6", "after a request with Connection: close, no further requests are "
         "processed", "nothing after it is read, not even answered with an error", 0,
         ("pipeline-close-then-get", "pipeline-close-then-bad-request", C + "close-then-more")),
    Rule("RFC 9112 §9.6", "an error answer reaches the client before the close", "lingering "
         "close: FIN after the answer, input read and dropped for up to 30 s", 0,
         ("control-response-intact-while-client-sends", "control-cl-413-intact-while-client-"
          "sends", I + "test_error_answers_reach_a_client_that_is_still_sending")),
    # -- Expect -------------------------------------------------------------------------
    Rule("RFC 9110 §10.1.1", "100-continue; MUST NOT send 100 to an HTTP/1.0 client; an "
         "expectation we cannot meet: 417", "100 before reading a body of an HTTP/1.1 "
         "request; never to 1.0; any other expectation 417", 417,
         ("expect-100-continue-length", "expect-100-continue-http10", "expect-unknown",
          "expect-100-continue-too-large")),
    # -- time -----------------------------------------------------------------------------
    Rule("RFC 9110 §15.5.9", "a request not received in time", "408: header section past "
         "header_timeout; a body pausing past body_timeout or falling below min_body_rate",
         408, (I + "test_slowloris_is_cut_off_while_others_are_served",
               I + "test_a_trickled_body_is_cut_off_by_min_body_rate")),
)
