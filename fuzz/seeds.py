#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ in the layouts that
handoff_core::testing reads (see core/src/testing.rs):

- handoff, openai_chunk, pool: the raw input;
- sse: [limits choice, cut count, cuts as u16 big-endian..., stream];
- http1: [cut count, cuts as u16 big-endian..., responses];
- stream: [source, (mock: connection u64, user id run, prompt run), steps...],
  with the step encodings of core/src/testing/stream_ops.rs (see stream_seeds).

Run from anywhere: python3 fuzz/seeds.py. It rewrites every seed it names and
leaves other files (inputs a fuzzer found worth keeping) alone.
"""

import json
import pathlib
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
FIXTURES = FUZZ.parent / "core" / "tests" / "fixtures" / "openai"

# sse limits choice byte: line limit index + 5 * event limit index, where the
# indices pick from [default, 0, 8, 64, 1024].
DEFAULT_LIMITS = 0
LIMITS_8 = 2 + 5 * 2
LIMITS_64 = 3 + 5 * 3
LIMITS_1024 = 4 + 5 * 4
LINE_64_EVENT_1024 = 3 + 5 * 4


def cuts(points):
    return bytes([len(points)]) + b"".join(struct.pack(">H", p) for p in points)


def write(target, name, data):
    directory = FUZZ / "corpus" / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def fixture(name):
    return (FIXTURES / name).read_bytes()


def handoff_seeds():
    php = (
        b'{"prompt":"Caf\\u00e9 na\\u00efve \\/ path \\ud83d\\ude00","user_id":42,'
        b'"model":"gpt-4o-mini","max_tokens":256,"temperature":0.7,"request_id":"req-7f3a"}'
    )
    seeds = {
        "prompt.json": b'{"prompt":"Hello"}',
        "php_escapes.json": php,
        "messages.json": json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "Hi \u00e9"}]},
                    {"role": "assistant", "content": None},
                    {"role": "user", "content": "Again / \"quoted\"\n"},
                ],
                "prompt": "ignored when messages are given",
                "model": "",
            }
        ).encode(),
        "response_headers.json": json.dumps(
            {
                "prompt": "x",
                "response_headers": {
                    "X-Request-Id": "abc-123",
                    "Set-Cookie": "a=b; Path=/",
                    "x-request-id": "duplicate",
                    "Content-Length": "5",
                    "X-Inject": "1\r\nSet-Cookie: evil=1",
                    "Bad Name": "v",
                    "X-Padded": "  trimmed\t",
                    "X-Number": 5,
                    "Proxy-Authorization": "no",
                    "X-Unicode": "caf\u00e9",
                },
            }
        ).encode(),
        "response_headers_php_empty.json": b'{"prompt":"x","response_headers":[]}',
        "response_headers_many.json": json.dumps({"response_headers": {f"X-H{i}": "v" for i in range(40)}}).encode(),
        "response_headers_large.json": json.dumps(
            {"response_headers": {f"X-L{i}": "v" * 1000 for i in range(9)}}
        ).encode(),
        "lone_nul": b"\x00",
        "padded.json": b' \n\t{"prompt":"x","user_id":"u-1"}\x00\x00',
        "test_pattern.json": b'{"prompt":"p","test_pattern":" slow-start "}',
        "test_pattern_injection.json": b'{"test_pattern":"a\\r\\nX-Evil: 1"}',
        "not_json": b'{"prompt": "unterminated',
        "not_object.json": b"[1, 2, {}]",
        "wrong_types.json": b'{"max_tokens":-1,"temperature":3,"user_id":1.5}',
        "big_numbers.json": b'{"max_tokens":4294967295,"temperature":2,"user_id":-9223372036854775808}',
        "tiny_temperature.json": b'{"temperature":1e-320,"prompt":""}',
        "duplicate_keys.json": b'{"prompt":"a","prompt":"b","model":null,"unknown":{"deep":[1,2,3]}}',
        "nulls.json": b'{"prompt":null,"messages":null,"response_headers":null,"test_pattern":null}',
        "bad_message.json": b'{"messages":[{"role":1,"content":"x"}]}',
        "error_position.json": b'\n\n  {"prompt":\n  "x",, }',
        # Every option a handoff may set, the forwarded JSON with key order that matters.
        "all_options.json": b'{"system":"Be brief.","prompt":"p","max_completion_tokens":9,"top_p":0.5,'
        b'"seed":-3,"presence_penalty":-2,"frequency_penalty":2,"stop":["\\n","END"],'
        b'"response_format":{"type":"json_schema","json_schema":{"z":1,"a":[1.5e3,null]}},'
        b'"tools":[{"type":"function","function":{"name":"f","parameters":{"b":{},"a":{}}}}],'
        b'"tool_choice":{"type":"function"},"user":"u","request_id":" r-1 ","format":"openai",'
        b'"reasoning":true}',
        "tool_messages.json": json.dumps(
            {
                "messages": [
                    {"role": "user", "name": "ann", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]},
                    {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c", "content": "42"},
                ]
            }
        ).encode(),
        "bad_options.json": b'{"format":"html","stop":[1],"tools":{},"request_id":"a\\r\\nb","seed":1.5}',
        "forwarded_surrogate.json": b'{"tools":[{"type":"function","x":"\\ud800"}]}',
    }
    for name, data in seeds.items():
        write("handoff", name, data)


def sse_seeds():
    for name in [
        "chat_stream.sse",
        "chat_stream_with_usage.sse",
        "error_stream.sse",
        "proxy_crlf_comments_stream.sse",
        "tool_calls_stream.sse",
        "truncated_stream.sse",
    ]:
        write("sse", name, bytes([DEFAULT_LIMITS]) + cuts([]) + fixture(name))
    write("sse", "chat_stream_cut.sse", bytes([DEFAULT_LIMITS]) + cuts([1, 7, 100, 101, 500]) + fixture("chat_stream.sse"))
    write(
        "sse",
        "crlf_cut_between_cr_and_lf.sse",
        bytes([DEFAULT_LIMITS]) + cuts([32, 33, 34]) + fixture("proxy_crlf_comments_stream.sse"),
    )
    synthetic = {
        "bom.sse": (DEFAULT_LIMITS, [], b"\xef\xbb\xbfdata: after bom\n\n"),
        "bom_split.sse": (DEFAULT_LIMITS, [1, 2], b"\xef\xbb\xbfdata: x\n\n\xef\xbb\xbfdata: second bom is data\n\n"),
        "bom_partial.sse": (DEFAULT_LIMITS, [1], b"\xef\xbbdata: not a bom\n\n"),
        "cr_only.sse": (DEFAULT_LIMITS, [6], b"data: a\rdata: b\r\rid: 1\r\r"),
        "mixed_endings.sse": (DEFAULT_LIMITS, [8, 9], b"data: a\r\ndata: b\n\r\ndata: c\r\r\n\n"),
        "fields.sse": (
            DEFAULT_LIMITS,
            [3],
            b"event: update\nid: 42\nretry: 1500\ndata\ndata:no space\ndata:  two spaces\n: comment\nunknown: x\n\n",
        ),
        "id_with_nul.sse": (DEFAULT_LIMITS, [], b"id: ok\n\nid: bad\x00id\ndata: x\n\nid\ndata: y\n\n"),
        "retry_bad.sse": (DEFAULT_LIMITS, [], b"retry: 12a\nretry: 99999999999999\nretry:\ndata: x\n\n"),
        "invalid_utf8.sse": (DEFAULT_LIMITS, [9], b"data: \xff\xfe caf\xc3\n\nevent: \xe2\x82\n\ndata: \xe2\x82\xac\n\n"),
        "empty_data_no_dispatch.sse": (DEFAULT_LIMITS, [], b"event: e\n\ndata:\n\n\n\n"),
        "incomplete_at_eof.sse": (DEFAULT_LIMITS, [], b"data: complete\n\ndata: never dispatched\n"),
        "line_too_long.sse": (LIMITS_8, [4], b"data: 12\n\ndata: 123456789\n\n"),
        "event_too_large.sse": (LINE_64_EVENT_1024, [], b"data: " + b"x" * 50 + b"\n" * 1 + (b"data: " + b"y" * 50 + b"\n") * 20 + b"\n"),
        "limits_64.sse": (LIMITS_64, [10, 20], b"id: " + b"\xff" * 50 + b"\nevent: " + b"\xfe" * 50 + b"\ndata: z\n\n"),
        "limits_1024.sse": (LIMITS_1024, [3, 700], fixture("error_stream.sse")),
    }
    for name, (limits, points, stream) in synthetic.items():
        write("sse", name, bytes([limits]) + cuts(points) + stream)


def openai_seeds():
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1726000000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "Hello"}, "logprobs": None, "finish_reason": None}],
    }
    role = dict(chunk, choices=[{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None}}])
    finish = dict(chunk, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
    usage = dict(chunk, choices=[], usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})
    tools = dict(
        chunk,
        choices=[
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{\"a\":"}}]},
            }
        ],
    )
    seeds = {
        "content.json": json.dumps(chunk, separators=(",", ":")).encode(),
        "role.json": json.dumps(role).encode(),
        "finish.json": json.dumps(finish).encode(),
        "usage.json": json.dumps(usage).encode(),
        "tool_calls.json": json.dumps(tools).encode(),
        "escaped_content.json": b'{"choices":[{"delta":{"content":"caf\\u00e9 \\"q\\"\\n\\ud83d\\ude00"},"finish_reason":""}]}',
        "two_choices.json": b'{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}',
        "null_content.json": b'{"choices":[{"delta":{"content":null},"finish_reason":"length"}]}',
        "error_object.json": b'{"error":{"message":"Rate limited","type":"requests","param":null,"code":"rate_limit_exceeded"}}',
        "error_numeric_code.json": b'{"error":{"message":"bad","type":"invalid_request_error","code":400}}',
        "error_string.json": b'{"error":"upstream timed out"}',
        "error_flat.json": b'{"object":"error","message":"model not found","type":"NotFoundError","code":404}',
        "done": b"[DONE]",
        "done_spaced": b"  [DONE] \n",
        "not_json": b"data: oops",
        "array.json": b"[1,2,3]",
        "wrong_shape.json": b'{"choices":{"delta":"x"}}',
        "deep.json": b'{"choices":[{"delta":{"content":"x","extra":[[[[[[{"a":[1,2,{"b":null}]}]]]]]]}}]}',
    }
    for name, data in seeds.items():
        write("openai_chunk", name, data)


def http1_seeds():
    sse_body = b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: [DONE]\n\n'

    def chunked(body, size=16):
        out = b""
        for i in range(0, len(body), size):
            piece = body[i : i + size]
            out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        return out + b"0\r\n\r\n"

    sse_head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    error_body = b'{"error":{"message":"Rate limited","type":"requests","code":"rate_limit_exceeded"}}'
    seeds = {
        "chunked_sse": ([], sse_head + chunked(sse_body)),
        "chunked_sse_cut": ([3, 40, 41, 90, 91, 92], sse_head + chunked(sse_body)),
        "keep_alive_twice": (
            [70],
            sse_head + chunked(sse_body) + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        ),
        "content_length": ([], b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\ndata: x\n\nrest"),
        "continue_then_ok": (
            [20],
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        "no_content": ([], b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n"),
        "http10_until_close": ([12], b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + sse_body),
        "http10_keep_alive": ([], b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc"),
        "extensions_trailers_bare_lf": (
            [5, 6],
            b"HTTP/1.1 200 OK\nTransfer-Encoding: gzip, chunked\n\n"
            b"5;name=value\nhello\n3 ; q=\"a;b\"\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\n\r\n",
        ),
        "error_429": (
            [],
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Retry-After: 1\r\n\r\n" % len(error_body) + error_body,
        ),
        "leading_blank_lines": ([1], b"\r\n\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        "te_and_cl": ([], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        "chunked_not_last": ([], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        "conflicting_lengths": ([], b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd"),
        "bad_chunk_size": ([], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        "chunk_size_overflow": ([], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n"),
        "switching_protocols": ([], b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"),
        "obs_fold": ([], b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
        "truncated_body": ([30], b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"),
        "truncated_chunk": ([], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc"),
        "head_only_partial": ([4], b"HTTP/1.1 200 OK\r\nContent-Le"),
    }
    for name, (points, data) in seeds.items():
        write("http1", name, cuts(points) + data)


def stream_seeds():
    # Source byte: % 4 == 0 mock, 1 backend, 2 backend after a 200 head;
    # bit 0x10: no non-2xx body is read.
    def mock(user, prompt, connection=7):
        user, prompt = user.encode(), prompt.encode()
        return bytes([0]) + struct.pack(">Q", connection) + bytes([len(user)]) + user + bytes([len(prompt)]) + prompt

    def head(status_index):
        return bytes([0, status_index])  # indices into stream_ops::STATUSES: 0 is 200, 7 is 429

    def raw(data):
        return bytes([1, len(data)]) + data

    def fragment(index, cut=0):
        return bytes([3, index, cut])

    end, client_gone, shutdown, wake, timeout = b"\x07", b"\x09", b"\x0a", b"\x0c", b"\x0e"

    def failed(kind):
        return bytes([8, kind])

    def advance_and_wake(ms):
        return bytes([11, ms // 4])

    backend, after_200 = b"\x01", b"\x02"
    seeds = {
        "mock_to_the_end": mock("user-7", "Tell me about caf\u00e9s") + wake * 30,
        "mock_client_gone": mock("u", "p") + wake * 5 + client_gone,
        "mock_long_unicode": mock("\U0001f600" * 60, "\u00e9\u4e2d" * 40, connection=2**64 - 1) + wake * 25,
        "mock_shutdown": mock("", "") + wake * 3 + shutdown,
        "complete_with_done": after_200 + b"".join(fragment(i, 17 * i) for i in range(6)) + end,
        "finish_reason_then_end": after_200 + fragment(1) + fragment(3, 9) + end,
        "client_gone_midway": after_200 + fragment(1) + fragment(2) + client_gone,
        "upstream_error_event": after_200 + fragment(1) + fragment(6, 30),
        "status_429_with_body": backend + head(7) + fragment(10, 20) + end,
        "status_500_not_read": b"\x11" + head(8) + wake,
        "status_body_stalls": backend + head(6) + raw(b'{"error":') + advance_and_wake(200),
        "first_byte_timeout": backend + advance_and_wake(200),
        "idle_timeout": after_200 + fragment(1) + advance_and_wake(100) + wake,
        "shutdown": after_200 + fragment(2) + shutdown,
        "backend_reset": after_200 + fragment(1) + failed(1),
        "failure_after_finish": after_200 + fragment(3) + failed(0),
        "data_before_head": backend + fragment(1),
        "second_head": after_200 + head(0),
        "line_too_long": after_200 + fragment(11, 50),
        "keep_alives": after_200 + wake * 10 + timeout,
        "bad_json": after_200 + fragment(8),
        "bom_and_fields": after_200 + fragment(9, 2) + fragment(7, 25) + fragment(5),
        "raw_bytes": b"\x03" + raw(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\r") + end,
    }
    for name, data in seeds.items():
        write("stream", name, data)


def pool_seeds():
    # Pool scripts are opaque bytes: these are the two recorded failures from
    # core/src/pool/tests.rs and a few shapes with a working and a dead backend.
    seeds = {
        "recorded_1": bytes([65, 0, 11, 2, 0, 141, 2, 0, 38, 0, 0, 20, 0, 60, 171, 4, 27, 0, 119, 0, 12, 52, 0, 78]),
        "recorded_2": bytes([8, 4, 4, 4, 0, 4, 0, 4, 0, 180, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 45, 7, 3, 0, 0, 0, 4, 0, 4, 0, 7]),
        "working_backend": bytes([2, 3, 4, 9, 2, 2] + list(range(0, 120, 3))),
        "dead_backend": bytes([1, 0, 0, 0, 1, 0] + [i * 7 % 256 for i in range(60)]),
        "empty": b"",
    }
    for name, data in seeds.items():
        write("pool", name, data)


def sse_raw_seeds():
    # [limit (16 * (byte + 1) bytes), cuts, stream]: passthrough event streams
    # with ids, comments, retry, CR/LF/CRLF, a cut-off tail and an oversized event.
    agent = (b"event: metadata\nid: 1\ndata: {\"run\":1}\n\n: ping\n\nretry: 10\r\n"
             b"data: a\r\ndata: b\r\n\r\nevent: end\rdata: null\r\r")
    seeds = {
        "agent_events.raw": bytes([4]) + cuts([10, 30]) + agent,
        "crlf_split.raw": bytes([1]) + cuts([8, 9, 10]) + b"data: x\r\n\r\ndata: y\r\n\r\n",
        "partial_tail.raw": bytes([1]) + cuts([]) + b"data: one\n\ndata: tw",
        "over_limit.raw": bytes([0]) + cuts([5]) + b"data: " + b"x" * 40 + b"\n\n",
        "empty_lines.raw": bytes([2]) + cuts([]) + b"\n\n\r\r\r\n\r\n",
    }
    for name, data in seeds.items():
        write("sse_raw", name, data)


if __name__ == "__main__":
    handoff_seeds()
    sse_seeds()
    openai_seeds()
    http1_seeds()
    stream_seeds()
    pool_seeds()
    sse_raw_seeds()
