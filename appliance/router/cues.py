"""Multilingual cue lexicons for the tier classifier: what kind of task a request asks for.

Each group names a task STRUCTURE (asks for a proof, a design under constraints, a diagnosis
from intermittent symptoms, a review), not a topic. Topic words ("distributed", "quantum",
"think step by step") are deliberately absent: vocabulary must not decide the tier in either
direction. Groups cover en/de/fr/es/pt/it/ru/zh/ja/ko.

Why word sets instead of regexes: the classifier has a 5 ms p99 budget on a busy 2-core
machine, and a dozen case-insensitive alternation regexes over a few thousand characters
alone cost more than that. Matching is done on lower-cased tokens (punctuation removed,
apostrophes dropped: "what's" -> "whats"): exact words, word stems (prefixes) and short
phrases (2-4 tokens); CJK cues are substrings, since those scripts have no spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Lexicon:
    words: frozenset[str] = frozenset()
    stems: tuple[str, ...] = ()  # token prefixes
    phrases: frozenset[str] = frozenset()  # space-joined tokens
    cjk: tuple[str, ...] = field(default=())  # substrings of the raw ask


def _lex(words: str = "", stems: str = "", phrases: tuple[str, ...] = (), cjk: str = "") -> Lexicon:
    return Lexicon(frozenset(words.split()), tuple(stems.split()), frozenset(phrases), tuple(cjk.split()))


# Asks for a proof, a derivation or a formal guarantee.
PROOF = _lex(
    words="prove proof proofs disprove counterexample derive derivation invariant invariants lemma "
          "termination decidable undecidable characterize characterise beweis beweise zeige preuve "
          "prouve prouvez demuestra demostración demostracion prueba dimostra dimostrazione докажи "
          "докажите доказательство",
    stems="counterexampl démontr demonstr disprov",
    phrases=("show that", "closed form", "lower bound", "upper bound", "is it always", "is this always",
             "is it true", "is this true", "is it possible", "is this sound", "is it sound", "for which",
             "always terminate", "always terminates", "expected number", "expected value", "prove que",
             "prueba que", "zeige dass"),
    cjk="证明 証明 증명",
)

# Asks for a design or a plan that must satisfy stated constraints and trade-offs.
DESIGN = _lex(
    words="design redesign architecture architect tradeoff tradeoffs formulate formulation "
          "migrate migration migrating rollout cutover propose strategy incrementally entwurf entwirf "
          "entwerfen architektur kompromisse conception concevez conçois compromis diseña diseñar diseño "
          "arquitectura compensaciones projete projetar desenho arquitetura progetta progettare "
          "architettura спроектируй спроектировать архитектуру архитектура",
    stems="architect migrat formulat",
    phrases=("trade off", "trade offs", "plan the", "plan it", "plan how", "plan for", "roll out",
             "cut over", "without downtime", "zero downtime", "how would you", "what would you", "lay out",
             "step by step plan", "design and implement"),
    cjk="设计 架构 权衡 迁移 方案 設計 トレードオフ 移行 설계 아키텍처",
)

# Symptoms that are intermittent or far from their cause: the diagnosis needs reasoning.
SYMPTOM = _lex(
    words="sometimes occasionally rarely intermittent intermittently randomly flaky nondeterministic "
          "nondeterminism hangs hang freezes freeze stalls stall drifts drift manchmal gelegentlich "
          "parfois ocasionalmente иногда изредка",
    stems="intermitten nondetermin",
    phrases=("every few", "every now", "once a", "once an", "once every", "once in", "only when", "only on",
             "only in", "only with", "only if", "only after", "but not on", "but not in", "but not with",
             "after we", "after i", "under load", "under heavy", "out of sync", "cant reproduce",
             "never reproduce", "not reproduce", "no error", "no errors", "passes all", "passes my",
             "passes our", "passes the", "works fine", "works on", "works locally", "in production",
             "non deterministic", "nur wenn", "nur bei", "de temps", "seulement quand", "a veces",
             "de vez", "solo cuando", "às vezes", "as vezes", "apenas quando", "a volte", "время от"),
    cjk="偶尔 有时 时不时 まれに 時々 ときどき たまに 가끔 때때로",
)

# Hard constraints stated in the ask.
CONSTRAINT = _lex(
    words="must never guarantee guarantees guaranteed exactly strict strictly without muss nie ohne "
          "garantiert doit jamais sans debe nunca sin deve sem никогда без",
    stems="guarant garant",
    phrases=("at most", "at least", "no more than", "even if", "even when", "even during", "must not",
             "bit exact", "не должно", "не должен"),
    cjk="必须 不能 保证 不会 必ず 保証 절대",
)

# Contest/algorithm signals (symbols such as 10^5 and ≤ are counted separately).
ALGO = _lex(
    words="modulo queries query algorithm algorithms complexity efficient efficiently faster "
          "subarrays subsequence permutations",
    stems="algorithm",
    phrases=("faster than", "up to", "mod a prime", "count the number", "how many ways"),
)
ALGO_SYMBOLS = ("10^", "10**", "≤", "≥", "<=", " o(", "·10", "×10")

# Review and diagnosis asks: find a cause, judge soundness, walk through failure sequences.
DIAGNOSE = _lex(
    words="review audit analyze analyse analysis threat weaknesses weakness exploit exploits attacker "
          "attackers attacks interleaving interleavings",
    stems="threatmodel",
    phrases=("root cause", "find the bug", "find the cause", "find the leak", "find the problem", "find all",
             "whats going on", "what is going on", "whats happening", "what is happening", "whats wrong",
             "what is wrong", "what could cause", "what could explain", "could be causing", "where would you",
             "how would you find", "how would you investigate", "how would you track",
             "how would you approach", "how would you go", "how would you prove", "how would you verify",
             "walk me through", "walk through", "is this correct", "is this safe", "is this secure",
             "is it secure", "is this broken", "threat model", "all the ways", "every way",
             "sequence of events", "sequences of events"),
    cjk="原因 分析 調査 考えられる 원인 분석",
)

# The user asks for brevity or intuition: a sign of an explanation, not of deep work.
BREVITY = _lex(
    words="briefly brief short shortly intuitively intuition eli5 quick quickly oneliner kurz bref breve "
          "rapidement",
    phrases=("one paragraph", "two sentences", "three sentences", "one sentence", "just the", "simple terms",
             "plain english", "plain terms", "high level", "no proofs", "no math", "no matrices", "one liner",
             "like im"),
    cjk="简单 簡単 간단",
)

GROUPS: dict[str, Lexicon] = {
    "proof": PROOF,
    "design": DESIGN,
    "symptom": SYMPTOM,
    "constraint": CONSTRAINT,
    "algo": ALGO,
    "diagnose": DIAGNOSE,
    "brevity": BREVITY,
}

# Units that make a number a scale or budget figure.
_UNIT_WORDS = (
    "ms µs us ns s sec secs second seconds minute minutes hour hours day days k m b tb gb mb kb x rps qps "
    "million millions billion billions users nodes services devices requests events writes reads lines "
    "tables modules partitions replicas regions percent"
)
UNITS = frozenset(_UNIT_WORDS.split())

_F = re.IGNORECASE

# Openers: matched once, anchored at the start of the ask (or of its last sentence), so cheap.
EASY_START = re.compile(
    r"^\W{0,8}(?:what(?:'s| is| are| does)|whats|explain|define|how (?:do|can|should) (?:i|you|we)|how to|"
    r"write|implement|create|add|convert|translate|rename|generate|give me|show me|summari[sz]e|make|"
    r"fix|regex|bash|sql|git|jq|awk|css|is it (?:safe|ok)|why (?:does|do|is|am)|can you|please|set up|"
    r"wie|was ist|schreib\w*|erkläre?|füge|comment|qu'est|écri\w+|explique\w*|cómo|como|qué es|"
    r"escrib\w+|explica\w*|o que é|escreva|come|cos'è|что такое|как|напиши|"
    r"如何|什么是|怎么|用|帮我|请|どう|とは|教えて|書いて|簡単に)",
    _F,
)

# Conversation glue: acknowledgements, continuations, greetings.
CHATTER = re.compile(
    r"^\W{0,8}(?:ok(?:ay)?|yes|yep|no|nope|sure|thanks?|thank you|thx|continue|go on|keep going|go ahead|"
    r"hi|hello|hey|good (?:morning|evening)|never ?mind|try again|looks good|do it|perfect|great)\b",
    _F,
)

# Agent-style imperative edits of a named file or symbol.
AGENT_EDIT = re.compile(
    r"^\W{0,8}(?:rename|add|remove|delete|move|bump|update|run|commit|revert|undo|replace|extract|sort|"
    r"increase|decrease|change|open|create|convert|fix the (?:lint|flake8|eslint|type)|make the)\b",
    _F,
)

# Transform the pasted material: summarise, translate, proofread, reformat. The material's
# length says nothing about the difficulty.
TRANSFORM = re.compile(
    r"^\W{0,8}(?:summari[sz]e|tl;?dr|translate|proofread|rewrite|rephrase|reformat|format|"
    r"turn (?:this|these)|extract|list|write (?:release notes|a summary|a commit message)|"
    r"fix (?:the )?(?:typos|grammar)|"
    r"fasse|übersetze|korrigiere|résume|traduis|corrige|resuma|resume este|traduce|traduza|riassumi|"
    r"traduci|переведи|кратко|请把|翻译|总结|この文章|要約|翻訳|요약|번역)",
    _F,
)

OPENERS: dict[str, re.Pattern[str]] = {
    "easy_start": EASY_START,
    "chatter": CHATTER,
    "agent_edit": AGENT_EDIT,
    "transform": TRANSFORM,
}
