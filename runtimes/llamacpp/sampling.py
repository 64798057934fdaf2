"""Per-sequence sampling: a llama.cpp sampler chain, stop strings and UTF-8 assembly.

The chain runs in C over the logits row of one sequence, so Python never loops over
the vocabulary. Text handling is per token: bytes are held until they form whole
UTF-8 characters, and text that could be the start of a stop string is held until
it is resolved either way.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import json
import math
from typing import Any

import llama_cpp as lc
import numpy as np
from llama_cpp.llama_grammar import json_schema_to_gbnf

from runtimes.base import InvalidRequest, Sampling
from runtimes.llamacpp.logprobs import RawLogprobs, raw_logprobs

PENALTY_LAST_N = 64
_RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks a random seed

# Any JSON object: what response_format json_object (and json_schema {}) asks for.
_ANY_OBJECT_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"""


def schema_to_grammar(schema: dict[str, Any]) -> str:
    """GBNF for a JSON schema; {} (no constraints) means any JSON object."""
    if not schema:
        return _ANY_OBJECT_GBNF
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as e:  # the converter raises plain exceptions for unsupported schemas
        raise InvalidRequest(f"unsupported JSON schema: {e}") from e


def request_grammar(s: Sampling) -> str | None:
    """The GBNF a request's answer must follow: its own `grammar`, or its JSON schema's."""
    if s.grammar:
        return s.grammar
    return schema_to_grammar(s.json_schema) if s.json_schema is not None else None


def check_sampling(s: Sampling) -> None:
    """Refuse options llama.cpp's samplers would misbehave on."""
    if not (s.repeat_penalty > 0 and math.isfinite(s.repeat_penalty)):
        raise InvalidRequest("repeat_penalty must be a finite number greater than 0")
    for name in ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty"):
        if not math.isfinite(getattr(s, name)):
            raise InvalidRequest(f"{name} must be a finite number")
    if s.ignore_eos and (s.json_schema is not None or s.grammar):
        raise InvalidRequest("ignore_eos cannot be combined with structured output (the answer must end)")
    if s.grammar and s.json_schema is not None:
        raise InvalidRequest("give either a grammar or a JSON schema, not both")


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(lc.llama_token_data)


class SamplerChain:
    """Samples one sequence's next token from its logits row; owns the C samplers.

    Logit bias and repetition penalties are applied with numpy, in place on the row
    llama.cpp returned (they touch a handful of tokens; llama.cpp's penalty sampler
    scans all 150k candidates). Greedy is then an argmax; otherwise llama.cpp's chain
    (top_k, top_p, min_p, temperature, seeded dist) runs in C on the adjusted row.

    A grammar is checked as llama.cpp's common sampler does: sample without it, test
    only the chosen token, and only if the grammar rejects it resample with the grammar
    applied first. Applying it to the whole vocabulary every step would be slow.
    """

    def __init__(self, model: Any, s: Sampling, prompt_tail: list[int], grammar: str | None = None):
        n_vocab = model.n_vocab
        self.n_vocab = n_vocab
        self.grammar = None
        self.ptr = None
        bias = [(int(t), float(b)) for t, b in s.logit_bias.items() if 0 <= int(t) < n_vocab]
        if s.ignore_eos:
            bias += [(t, -math.inf) for t in model.eog_tokens]
        self._bias_ids = np.array([t for t, _ in bias], dtype=np.int64)
        self._bias_vals = np.array([b for _, b in bias], dtype=np.float32)
        self._penalties = (s.repeat_penalty, s.frequency_penalty, s.presence_penalty)
        self._penalize = s.repeat_penalty != 1.0 or bool(s.frequency_penalty) or bool(s.presence_penalty)
        check_sampling(s)
        # The penalty window starts with the prompt's tail, as in llama-server.
        self._window: collections.deque[int] = collections.deque(
            prompt_tail[-PENALTY_LAST_N:], PENALTY_LAST_N
        )
        self._greedy = s.greedy
        self._n_logprobs = s.logprobs
        self.logprobs: RawLogprobs | None = None
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        self.ptr = chain
        try:
            if self._greedy:
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            else:
                if s.top_k > 0:
                    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(s.top_k))
                if 0.0 < s.top_p < 1.0:
                    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(s.top_p, 1))
                if s.min_p > 0.0:
                    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(s.min_p, 1))
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(s.temperature))
                seed = _RANDOM_SEED if s.seed is None else s.seed & 0xFFFFFFFF
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
            if grammar is None:
                grammar = request_grammar(s)
            if grammar is not None:
                g = lc.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
                if not g:
                    what = "grammar" if s.grammar else "grammar made from the JSON schema"
                    raise InvalidRequest(f"the {what} is not GBNF llama.cpp can parse (with a 'root' rule)")
                self.grammar = g
                self._cur = np.zeros(n_vocab, dtype=_TOKEN_DATA)
                self._ids = np.arange(n_vocab, dtype=np.int32)
                self._arr = lc.llama_token_data_array(
                    ctypes.cast(self._cur.ctypes.data, lc.llama_token_data_p), n_vocab, -1, False
                )
                self._one = lc.llama_token_data(0, 1.0, 0.0)
                self._one_arr = lc.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)
        except BaseException:
            self.free()
            raise

    @property
    def plain_greedy(self) -> bool:
        """The argmax of the raw row: no bias, penalties or grammar between the logits and
        the choice, so a near tie on the row is a near tie of the choice."""
        return self._greedy and self.grammar is None and not len(self._bias_ids) and not self._penalize

    def near_tie(self, ctx_ptr: Any, idx: int, margin: float) -> bool:
        """Whether another token's logit in row `idx` is within `margin` of the best one."""
        return near_tie(self._row(ctx_ptr, idx), margin)

    def argmax(self, ctx_ptr: Any, idx: int) -> int:
        """What a plain-greedy chain would sample from row `idx`, without sampling it."""
        return int(self._row(ctx_ptr, idx).argmax())

    def _row(self, ctx_ptr: Any, idx: int) -> np.ndarray:
        return np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx_ptr, idx), shape=(self.n_vocab,))

    def sample(self, ctx_ptr: Any, idx: int) -> int:
        """Sample (and accept) the next token from batch row `idx`; with logprobs asked for,
        `self.logprobs` then holds the token's (see logprobs.py: over the raw row)."""
        row = self._row(ctx_ptr, idx)
        raw = row.copy() if self._n_logprobs is not None else None  # bias and penalties edit `row`
        tok = self._sample_row(row, ctx_ptr, idx)
        if raw is not None:
            self.logprobs = raw_logprobs(raw, tok, self._n_logprobs or 0)
        return tok

    def _sample_row(self, row: np.ndarray, ctx_ptr: Any, idx: int) -> int:
        if len(self._bias_ids):
            row[self._bias_ids] += self._bias_vals
        if self._penalize:
            self._apply_penalties(row)
        if self.grammar is not None:
            tok = self._sample_with_grammar(row)
        elif self._greedy:
            tok = int(row.argmax())  # the first maximum, as llama.cpp's greedy sampler picks
        else:
            tok = lc.llama_sampler_sample(self.ptr, ctx_ptr, idx)  # reads the adjusted row
        if self._penalize:
            self._window.append(tok)
        return tok

    def _apply_penalties(self, row: np.ndarray) -> None:
        """llama.cpp's penalties sampler, for the few tokens in the window only."""
        repeat, freq, present = self._penalties
        counts = collections.Counter(self._window)
        ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        n = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        vals = row[ids]
        vals = np.where(vals <= 0, vals * repeat, vals / repeat)
        row[ids] = vals - n * freq - present

    def _sample_with_grammar(self, row: np.ndarray) -> int:
        tok = self._apply_chain(row, with_grammar=False)
        self._one.id, self._one.logit, self._one_arr.size = tok, 1.0, 1
        lc.llama_sampler_apply(self.grammar, ctypes.byref(self._one_arr))
        if math.isinf(self._one.logit):
            tok = self._apply_chain(row, with_grammar=True)
        lc.llama_sampler_accept(self.grammar, tok)
        lc.llama_sampler_accept(self.ptr, tok)
        return tok

    def _apply_chain(self, row: np.ndarray, *, with_grammar: bool) -> int:
        cur, arr = self._cur, self._arr
        cur["id"] = self._ids
        cur["logit"] = row
        cur["p"] = 0.0
        arr.data = ctypes.cast(cur.ctypes.data, lc.llama_token_data_p)
        arr.size, arr.selected, arr.sorted = self.n_vocab, -1, False
        if with_grammar:
            lc.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        lc.llama_sampler_apply(self.ptr, ctypes.byref(arr))
        if arr.selected < 0:
            raise RuntimeError("the sampler chain selected no token")
        return int(arr.data[arr.selected].id)

    def free(self) -> None:
        if self.ptr:
            lc.llama_sampler_free(self.ptr)
            self.ptr = None
        if self.grammar:
            lc.llama_sampler_free(self.grammar)
            self.grammar = None

    def __del__(self) -> None:
        self.free()


class TextAssembler:
    """Turns token bytes into text safe to send: whole characters, stop strings resolved."""

    def __init__(self, stop: list[str]):
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in stop if s]
        self._held = ""  # decoded text not yet sent (a possible stop-string start)
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add a token's bytes; return text that is now safe to emit."""
        self._held += self._utf8.decode(data)
        return self._release()

    def finish(self) -> str:
        """End of generation: flush what is held (an incomplete stop-string start is text)."""
        if self.stopped:
            return ""
        self._held += self._utf8.decode(b"", final=True)
        out, self._held = self._held, ""
        # A complete stop string can still appear in the flushed bytes.
        cut = self._find_stop(out)
        if cut is not None:
            self.stopped = True
            return out[:cut]
        return out

    def _find_stop(self, text: str) -> int | None:
        best: int | None = None
        for s in self._stops:
            i = text.find(s)
            if i >= 0 and (best is None or i < best):
                best = i
        return best

    def _release(self) -> str:
        text = self._held
        if not self._stops:
            self._held = ""
            return text
        cut = self._find_stop(text)
        if cut is not None:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._partial_len(text)
        if keep:
            self._held = text[-keep:]
            return text[:-keep]
        self._held = ""
        return text

    def _partial_len(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
        best = 0
        for s in self._stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best


def near_tie(row: np.ndarray, margin: float) -> bool:
    """Whether two or more logits lie within `margin` of the row's maximum."""
    return int(np.count_nonzero(row >= row.max() - margin)) > 1
