"""leanlm: large language models on ordinary CPUs in a fraction of the memory.

    import leanlm
    llm = leanlm.Model("gemma3-270m", n_ctx=2048, kv_codec="kivi4")
    print(llm.generate("The capital of France is", max_tokens=16, temperature=0))
    for piece in llm.generate("Once upon a time", max_tokens=64, stream=True):
        print(piece, end="", flush=True)
    reply = llm.create_chat_completion([{"role": "user", "content": "Hi!"}])
    print(reply["choices"][0]["message"]["content"])

The engine runs with the GIL released; Ctrl-C stops a generation within one decode step (or one
prompt batch); engine errors are raised as LeanlmError with the engine's message.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any, Dict, Generic, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union, cast

from ._core import Generation as _Generation
from ._core import LeanlmError
from ._core import Model as _CoreModel

__all__ = ["Model", "Stream", "LeanlmError", "__version__"]
__version__ = "0.1.0"

Prompt = Union[str, Sequence[int]]
T = TypeVar("T")


class _FromCore(Generic[T]):
    """A read-only attribute passed through from the engine object behind a wrapper (its _core)."""

    def __init__(self, doc: str = "") -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, owner: Any = None) -> T:
        if obj is None:  # looked up on the class (help(), inspect)
            return cast(T, self)
        return cast(T, getattr(obj._core, self._name))


def _parse_bytes(value: Union[int, float, str, None], what: str) -> int:
    """Bytes from an int or a string like '256MiB', '1.5GiB', '64M' (0 or None: no limit)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a byte count or a string like '256MiB'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{what} must not be negative")
        return int(value)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a byte count or a string like '256MiB'")
    text = value.strip()
    units = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
             "g": 1024**3, "gb": 1000**3, "gib": 1024**3}
    num = text.rstrip("kKmMgGiIbB")
    unit = text[len(num):].strip().lower()
    try:
        n = float(num)
    except ValueError:
        n = -1.0
    if unit not in units or n < 0:
        raise ValueError(f"{what}={value!r}: expected bytes, or a size like '256MiB'")
    return int(n * units[unit])


class Stream:
    """The text of one generation, piece by piece (each piece whole UTF-8 characters).

    After the last piece: finish_reason ('stop' or 'length'), prompt_tokens, completion_tokens and
    kv_bytes (the bytes the generation's KV cache held). close() frees the KV cache early.
    """

    def __init__(self, gen: _Generation) -> None:
        self._core = gen

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> str:
        piece = self._core.next()
        if piece is None:
            self._core.close()
            raise StopIteration
        return piece

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._core.close()

    finish_reason: _FromCore[Optional[str]] = _FromCore("'stop' or 'length' once the generation ended")
    prompt_tokens: _FromCore[int] = _FromCore()
    completion_tokens: _FromCore[int] = _FromCore()
    kv_bytes: _FromCore[int] = _FromCore("bytes of the generation's KV cache (kept after it is freed)")
    text: _FromCore[str] = _FromCore("everything yielded so far")


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise ValueError(f"{name}={value} is out of range [{lo}, {hi}]")


class Model:
    """A GGUF model loaded into the engine, with its own thread pool and KV memory budget.

    model: a GGUF file, or a short name of an installed model ('gemma3-270m', 'smollm2-135m',
    'qwen2.5-coder-1.5b'; `leanlm pull NAME` installs one); None: $LEANLM_MODEL or the default model.
    n_ctx: most positions per sequence. threads: 0 = one per core. kv_codec: 'f16', 'q8_0', 'q4_0',
    'kivi2', 'kivi4', 'cq-...', 'pq' (with parameters, as `leanlm run --kv-codec`). kv_evict and
    kv_budget: an eviction policy ('streaming', 'h2o', 'scissorhands', 'snapkv') and its budget (tokens,
    or '20%'). kv_mem: most bytes of KV cache (an int, or '256MiB'; 0 = no limit).
    """

    def __init__(self, model: Optional[str] = None, *, n_ctx: int = 4096, threads: int = 0, batch: int = 512,
                 kv_codec: str = "f16", kv_evict: str = "none", kv_budget: Union[int, str, None] = None,
                 kv_think: float = 0.0, kv_topk: int = 0, kv_codebooks: Optional[str] = None,
                 kv_mem: Union[int, str, None] = 0) -> None:
        model = os.fspath(model) if model is not None else ""
        budget = "" if kv_budget is None else str(kv_budget)
        # Short names are looked up in models/ beside the interpreter, the working directory, this
        # environment (a virtual environment inside a checkout finds the checkout's models) and ~/.cache/leanlm.
        self._core = _CoreModel(model, [sys.prefix], n_ctx, threads, batch, kv_codec, kv_evict, budget, float(kv_think), int(kv_topk),
                             kv_codebooks or "", _parse_bytes(kv_mem, "kv_mem"))

    # ---- what was loaded ----
    path: _FromCore[str] = _FromCore("the model file")
    arch: _FromCore[str] = _FromCore()
    n_ctx: _FromCore[int] = _FromCore()
    n_vocab: _FromCore[int] = _FromCore()
    threads: _FromCore[int] = _FromCore()
    kv_config: _FromCore[str] = _FromCore("the KV cache configuration's canonical name, e.g. 'kivi4' or 'f16+h2o@20%'")
    chat_format: _FromCore[str] = _FromCore()
    kv_bytes_in_use: _FromCore[int] = _FromCore("bytes of KV cache held right now by all of this model's live generations")

    # ---- tokens ----
    def tokenize(self, text: Union[str, bytes], add_bos: bool = True, special: bool = False) -> List[int]:
        """Token ids of text. add_bos follows the model (some add none); special: control tokens
        written in the text (like '<start_of_turn>') become their ids."""
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return self._core.tokenize(text, add_bos, special)

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        return self._core.detokenize(list(ids), special)

    # ---- generation ----
    def generate(self, prompt: Prompt, max_tokens: Optional[int] = 128, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
                 seed: Optional[int] = None, stop: Union[str, Sequence[str], None] = None, ignore_eos: bool = False,
                 stream: bool = False, add_bos: bool = True, special: bool = False) -> Union[str, Stream]:
        """Text after the prompt (a string, or token ids). stream=True returns a Stream yielding
        pieces as they are generated; else the whole text. max_tokens None: until the context is full."""
        s = self._start(prompt, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed,
                        stop, ignore_eos, add_bos, special)
        if stream:
            return s
        with s:
            return "".join(s)

    def _start(self, prompt: Prompt, max_tokens: Optional[int], temperature: float, top_k: int, top_p: float,
               min_p: float, repeat_penalty: float, repeat_last_n: int, seed: Optional[int],
               stop: Union[str, Sequence[str], None], ignore_eos: bool, add_bos: bool, special: bool) -> Stream:
        if max_tokens is not None and max_tokens < 0:
            raise ValueError("max_tokens must be 0 or more (None: until the context is full)")
        _check_range("temperature", temperature, 0.0, 100.0)
        _check_range("top_p", top_p, 0.0, 1.0)
        _check_range("min_p", min_p, 0.0, 1.0)
        _check_range("repeat_penalty", repeat_penalty, 0.01, 100.0)
        if top_k < 0:
            raise ValueError("top_k must be 0 (off) or more")
        if repeat_last_n < 0:
            raise ValueError("repeat_last_n must be 0 or more")
        if isinstance(stop, str):
            stop = [stop]
        stops = [s for s in (stop or []) if s]
        if isinstance(prompt, (str, bytes)):
            ids = self.tokenize(prompt, add_bos=add_bos, special=special)
        else:
            ids = [int(t) for t in prompt]
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        gen = self._core.start(ids, -1 if max_tokens is None else int(max_tokens), float(temperature), int(top_k),
                            float(top_p), float(min_p), float(repeat_penalty), int(repeat_last_n),
                            int(seed) & 0xFFFFFFFFFFFFFFFF, stops, bool(ignore_eos))
        return Stream(gen)

    def create_completion(self, prompt: Prompt, max_tokens: Optional[int] = 16, temperature: float = 0.8,
                          top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05, repeat_penalty: float = 1.0,
                          seed: Optional[int] = None, stop: Union[str, Sequence[str], None] = None,
                          stream: bool = False) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """OpenAI's completion: a 'text_completion' dict, or with stream=True an iterator of chunks."""
        s = self._start(prompt, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, 64, seed, stop, False,
                        True, False)
        meta = {"id": "cmpl-" + uuid.uuid4().hex, "object": "text_completion", "created": int(time.time()),
                "model": self.path}
        if stream:
            return self._completion_chunks(s, meta)
        with s:
            text = "".join(s)
        return dict(meta, choices=[{"index": 0, "text": text, "logprobs": None, "finish_reason": s.finish_reason}],
                    usage=_usage(s))

    __call__ = create_completion

    def _completion_chunks(self, s: Stream, meta: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        with s:
            for piece in s:
                yield dict(meta, choices=[{"index": 0, "text": piece, "logprobs": None, "finish_reason": None}])
            yield dict(meta, choices=[{"index": 0, "text": "", "logprobs": None, "finish_reason": s.finish_reason}],
                       usage=_usage(s))

    def create_chat_completion(self, messages: Sequence[Mapping[str, Any]], max_tokens: Optional[int] = None,
                               temperature: float = 0.8, top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05,
                               repeat_penalty: float = 1.0, seed: Optional[int] = None,
                               stop: Union[str, Sequence[str], None] = None,
                               stream: bool = False) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """OpenAI's chat completion in the model's chat format: a 'chat.completion' dict, or with
        stream=True an iterator of 'chat.completion.chunk' dicts (role first, then content deltas)."""
        prompt = self.format_chat(messages)
        s = self._start(prompt, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, 64, seed, stop, False,
                        True, True)
        meta = {"id": "chatcmpl-" + uuid.uuid4().hex, "created": int(time.time()), "model": self.path}
        if stream:
            return self._chat_chunks(s, meta)
        with s:
            text = "".join(s)
        return dict(meta, object="chat.completion",
                    choices=[{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                              "finish_reason": s.finish_reason}],
                    usage=_usage(s))

    def _chat_chunks(self, s: Stream, meta: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        with s:
            base = dict(meta, object="chat.completion.chunk")
            yield dict(base, choices=[{"index": 0, "delta": {"role": "assistant"}, "logprobs": None,
                                       "finish_reason": None}])
            for piece in s:
                yield dict(base, choices=[{"index": 0, "delta": {"content": piece}, "logprobs": None,
                                           "finish_reason": None}])
            yield dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": s.finish_reason}],
                       usage=_usage(s))

    def format_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt text of a conversation in the model's chat format."""
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...}")
        pairs = []
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping):
                raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content'")
            role, content = m.get("role"), m.get("content")
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"messages[{i}]['role'] must be 'system', 'user' or 'assistant', not {role!r}")
            if isinstance(content, list):  # OpenAI's content parts: the text ones, joined
                if not all(isinstance(p, Mapping) and p.get("type") == "text" for p in content):
                    raise ValueError(f"messages[{i}]['content']: only text parts are supported")
                content = "".join(str(p.get("text", "")) for p in content)
            if not isinstance(content, str):
                raise ValueError(f"messages[{i}]['content'] must be a string")
            pairs.append((role, content))
        return self._core.format_chat(pairs, add_generation_prompt)

    # ---- scoring ----
    def perplexity(self, text: str, n_ctx: int = 512, max_chunks: Optional[int] = None) -> float:
        """Perplexity of text as `leanlm perplexity` (and llama-perplexity) computes it: chunks of
        n_ctx tokens, each from an empty cache, the second half of each scored."""
        ids = self.tokenize(text, add_bos=True, special=False)
        ppl, _ = self._core.perplexity(ids, int(n_ctx), -1 if max_chunks is None else int(max_chunks))
        return ppl

    def __repr__(self) -> str:
        return f"leanlm.Model({self.path!r}, n_ctx={self.n_ctx}, kv={self.kv_config!r}, threads={self.threads})"


def _usage(s: Stream) -> Dict[str, int]:
    return {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
            "total_tokens": s.prompt_tokens + s.completion_tokens, "kv_bytes": s.kv_bytes}
