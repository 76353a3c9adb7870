"""The translator on an OpenAI-compatible completion server, against a small scripted HTTP server on
127.0.0.1: what it sends (the exact ChatML prompt, greedy, log-probs, stop strings, the cap), how it
reads both forms of log-probs, the loop guard and the copy check on returned tokens, bounded retries,
errors that name the URL, and a direct session that falls back to the cascade way when the server
goes away. Every request is bounded by short timeouts; no test waits longer than a few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from scripted import audio_for, components, spoken

from streamst.errors import OptionsError, TranslatorUnavailableError
from streamst.languages import resolve
from streamst.server.decoder_watch import DecoderWatch
from streamst.server.process import free_port
from streamst.sessions.direct import DirectSession
from streamst.translators.openai_server import OpenAIServerTranslator, ServerOptions, parse_completion
from streamst.translators.prompt import chat_prompt
from streamst.types import FinalEvent

EN, DE, ZH = resolve("en"), resolve("de"), resolve("zh")


def llama_answer(tokens: list[str], finish: str = "stop", logprob: float = -0.1, cached: int = 0) -> dict:
    """An answer in llama-server's form: logprobs.content with ids and bytes."""
    content = [
        {"id": 100 + tokens.index(t), "token": t, "bytes": list(t.encode()), "logprob": logprob, "top_logprobs": []}
        for t in tokens
    ]
    return {
        "choices": [{"text": "".join(tokens), "index": 0, "logprobs": {"content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 50, "completion_tokens": len(tokens), "prompt_tokens_details": {"cached_tokens": cached}},
    }


class FakeServer:
    """/v1/models and /v1/completions answered by `answer(body) -> (status, json)`; records bodies."""

    def __init__(self, answer: Callable[[dict], tuple[int, dict]]) -> None:
        self.bodies: list[dict] = []
        self.n_requests = 0
        self.models_status = 200  # what GET /v1/models answers
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out
                    self.wfile.write(data)

            def do_GET(self) -> None:
                fake.n_requests += 1
                self._send(fake.models_status, {"data": [{"id": "qwen-test"}]} if fake.models_status == 200 else {})

            def do_POST(self) -> None:
                fake.n_requests += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"]))) | {"_path": self.path}
                fake.bodies.append(body | {"authorization": self.headers.get("Authorization")})
                self._send(*answer(body))

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def translator(url: str, **options) -> OpenAIServerTranslator:
    return OpenAIServerTranslator(ServerOptions(url=url, timeout_s=5, connect_timeout_s=1, backoff_s=0.01, **options))


def test_it_sends_the_chatml_prompt_exactly_greedy_with_logprobs_stops_and_the_cap():
    with FakeServer(lambda body: (200, llama_answer(["Guten", " Morgen", "."], cached=40))) as server:
        result = translator(server.url, api_key="k3y").translate(
            "Good morning.", EN, DE, committed="Guten", earlier=[("Hello.", "Hallo.")]
        )
    body = server.bodies[0]
    parts = chat_prompt("Good morning.", EN, DE, "Guten", earlier=[("Hello.", "Hallo.")])
    assert body["prompt"] == parts.head_text + parts.source + parts.tail
    assert body["prompt"].endswith("<|im_start|>assistant\nGuten")
    assert body["temperature"] == 0 and body["logprobs"] == 1 and "<|im_end|>" in body["stop"]
    assert body["model"] == "qwen-test" and body["authorization"] == "Bearer k3y"
    assert body["max_tokens"] == 32  # the in-process rule: at least 32, else 2.5 per source token
    assert result.text == "Guten Morgen." and result.finished
    assert [s.token_id for s in result.tokens] == [100, 101, 102] and result.tokens[0].logprob == -0.1
    assert (result.n_prompt_tokens, result.n_prefill_tokens) == (50, 10)


def test_a_given_max_new_tokens_is_sent_and_a_cut_translation_is_not_finished():
    with FakeServer(lambda body: (200, llama_answer(["Guten"], finish="length"))) as server:
        result = translator(server.url, model="m").translate("Good morning.", EN, DE, max_new_tokens=1)
    assert server.bodies[0]["max_tokens"] == 1 and server.bodies[0]["model"] == "m"
    assert result.text == "Guten" and not result.finished


def test_openai_style_logprobs_and_split_characters_are_read():
    answer = {
        "choices": [{
            "text": "你好", "finish_reason": "stop",
            "logprobs": {"tokens": ["bytes:\\xe4\\xbd", "bytes:\\xa0", "好"], "token_logprobs": [-0.5, -0.1, -0.2]},
        }],
        "usage": {"prompt_tokens": 9},
    }  # fmt: skip
    completion = parse_completion(answer, "http://x/v1")
    assert [s.text for s in completion.steps] == ["", "你", "好"]
    assert completion.steps[0].token_id == completion.steps[0].token_id  # a stable stand-in id
    assert completion.stopped and completion.n_prompt_tokens == 9 and completion.n_cached_tokens == 0


def test_an_answer_without_logprobs_is_a_clear_error():
    with pytest.raises(TranslatorUnavailableError, match="log-probs"):
        parse_completion({"choices": [{"text": "Hallo", "finish_reason": "stop"}]}, "http://x/v1")


def test_a_loop_in_the_returned_tokens_is_cut_where_it_starts():
    tokens = ["Es", " ist"] + [" ja"] * 20
    with FakeServer(lambda body: (200, llama_answer(tokens, finish="length"))) as server:
        result = translator(server.url).translate("It is yes yes yes.", EN, DE)
    assert result.text.startswith("Es ist ja") and result.text.count(" ja") < 5 and not result.finished


def test_a_translation_that_copies_its_latin_source_is_not_committed():
    source = "professor of medicine at the university of Dalhousie"
    words = [" " + w for w in source.split()]
    with FakeServer(lambda body: (200, llama_answer(words))) as server:
        result = translator(server.url).translate(source, EN, DE)
    assert result.text == "" and result.tokens == () and not result.finished


def test_a_translation_that_comments_on_itself_is_asked_again_without_the_words_of_the_comment():
    comment = ["It", " helps", ".", " The", " German", " text", " \"", "Es", " hilft", "\"", " translates", " to", " English"]

    def answer(body):
        if body["_path"] == "/tokenize":
            return 200, {"tokens": [len(body["content"])]}  # one token per word, its id its length
        return 200, llama_answer(["It", " helps", " us", "."] if "logit_bias" in body else comment, finish="length")

    with FakeServer(answer) as server:
        result = translator(server.url, model="m").translate("Es hilft uns.", resolve("de"), EN)
    assert result.text == "It helps us." and server.bodies[-1]["logit_bias"]


def test_a_translation_that_comments_again_keeps_only_the_sentences_before_the_comment():
    tokens = ["It", " helps", ".", " The", " German", " text", " \"", "Es", " hilft", "\"", " translates", " to", " English"]

    def answer(body):
        if body["_path"] == "/tokenize":
            return 200, {"tokens": [len(body["content"])]}
        return 200, llama_answer(tokens, finish="length")

    with FakeServer(answer) as server:
        result = translator(server.url, model="m").translate("Es hilft.", resolve("de"), EN)
    assert result.text == "It helps." and result.finished, "what is kept ends a sentence"
    assert [b["_path"] for b in server.bodies].count("/v1/completions") == 2


def test_a_copy_is_decoded_again_with_the_copied_words_banned_through_the_servers_tokenizer():
    source = "professor of medicine at the university of Dalhousie"
    words = [" " + w for w in source.split()]

    def answer(body):
        if body["_path"] == "/tokenize":
            return 200, {"tokens": [len(body["content"])]}  # one token per word, its id its length
        if "logit_bias" in body:
            return 200, llama_answer([" Professor", " der", " Medizin"])
        return 200, llama_answer(words)

    with FakeServer(answer) as server:
        result = translator(server.url, model="m").translate(source, EN, DE)
    banned = server.bodies[-1]["logit_bias"]
    assert result.text == " Professor der Medizin" and result.finished
    assert banned and all(bias == -100 for bias in banned.values())
    assert {b["_path"] for b in server.bodies} == {"/v1/completions", "/tokenize"}


def test_a_refused_connection_is_retried_a_bounded_number_of_times_then_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(TranslatorUnavailableError, match=f"is llama-server .*running at {url}"):
        translator(url, model="m").translate("Hello.", EN, DE)
    assert time.monotonic() - started < 5


def test_a_503_is_retried_then_reported_with_the_status():
    with FakeServer(lambda body: (503, {"error": {"message": "Loading model"}})) as server:
        with pytest.raises(TranslatorUnavailableError, match="HTTP 503.*Loading model"):
            translator(server.url, model="m", n_retries=2).translate("Hello.", EN, DE)
    assert len(server.bodies) == 3


def test_a_server_that_does_not_answer_in_time_is_a_timeout_error():
    def slow(body):
        time.sleep(2)
        return 200, llama_answer(["Hallo"])

    with FakeServer(slow) as server:
        t = OpenAIServerTranslator(ServerOptions(url=server.url, model="m", timeout_s=0.5, connect_timeout_s=1))
        with pytest.raises(TranslatorUnavailableError, match="did not answer within 0.5 s"):
            t.translate("Hello.", EN, DE)
    assert len(server.bodies) == 1, "a timed-out request must not be sent again"


def test_the_readiness_probe_names_a_server_that_refuses_and_sends_it_nothing_twice():
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(TranslatorUnavailableError, match=f"cannot reach the translation server at {url}"):
        translator(url, model="m").check_reachable()
    assert time.monotonic() - started < 5


def test_the_decoder_watch_follows_a_server_that_stops_answering_and_comes_back():
    with FakeServer(lambda body: (200, llama_answer(["Hallo"]))) as server:
        watch = DecoderWatch(lambda: translator(server.url, model="m", n_retries=0))
        answers = asyncio.run(watch.probe()), watch.problem
        server.models_status = 503
        asyncio.run(watch.probe())
        down = watch.problem
        server.models_status = 200
        asyncio.run(watch.probe())
    assert answers == (None, None)
    assert down is not None and server.url in down and "HTTP 503" in down
    assert watch.problem is None
    assert server.n_requests == 3, "one GET per probe, never retried"


@pytest.mark.parametrize("url", ["127.0.0.1:8080/v1", "ftp://host/v1", ""])
def test_a_url_that_is_not_http_is_refused_with_an_example(url):
    with pytest.raises(OptionsError, match="http://127.0.0.1:8080/v1"):
        ServerOptions(url=url)


def test_a_direct_session_falls_back_to_the_cascade_when_the_server_fails_and_its_close_errors_clearly():
    """The server answers the first requests, then goes away: steps fall back to the cascade way;
    the segment's close then fails with the error naming the URL (the server sends engine_error),
    in bounded time, never a hang."""
    talk = spoken("Good morning everyone today we talk about the weather.", start_ms=300)
    n_answered = 2

    def answer(body):
        return 200, llama_answer(["GOOD", " MORNING"], finish="length")

    server = FakeServer(answer)
    with server:
        session = DirectSession(components(talk, translator(server.url, model="m", n_retries=1)), EN, DE)
        audio = audio_for(talk, talk[-1].end_ms + 1_500)
        events, at = [], 0
        while len(server.bodies) < n_answered:
            events += session.push(audio[at : at + 1600])
            at += 1600
    started = time.monotonic()
    with pytest.raises(TranslatorUnavailableError, match=server.url):
        for start in range(at, len(audio), 1600):
            events += session.push(audio[start : start + 1600])
        events += session.finish()
    assert time.monotonic() - started < 10
    assert session.stats.n_fallbacks == 1, "the step that failed did not hand the segment to the cascade way"


def test_a_direct_session_whose_close_succeeds_after_a_failed_step_finishes_in_cascade():
    """A step fails (the server blipped) and the server is back by the close: the cascade finishes
    the segment and its final says so."""
    talk = spoken("Good morning everyone.", start_ms=300)
    state = {"n": 0}

    def answer(body):
        state["n"] += 1
        if state["n"] == 1:
            return 400, {"error": {"message": "blip"}}
        return 200, llama_answer(["GUTEN", " MORGEN", " ALLE", "."])

    with FakeServer(answer) as server:
        session = DirectSession(components(talk, translator(server.url, model="m")), EN, DE)
        audio = audio_for(talk, talk[-1].end_ms + 1_500)
        events = []
        for start in range(0, len(audio), 1600):
            events += session.push(audio[start : start + 1600])
        events += session.finish()
    finals = [e for e in events if isinstance(e, FinalEvent)]
    assert finals and finals[0].mode == "cascade" and "direct step failed" in finals[0].fallback_reason
    assert "HTTP 400" in finals[0].fallback_reason and finals[0].committed_text.endswith("GUTEN MORGEN ALLE.")
