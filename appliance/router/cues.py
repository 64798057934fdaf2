"""Multilingual cue lexicons for the tier classifier: what kind of task a request asks for.

Each group names a task STRUCTURE (asks for a proof, a design under constraints, a diagnosis
from intermittent symptoms, a definition, a trivial edit), not a topic. Topic words
("distributed", "quantum", "think step by step") are deliberately absent: vocabulary must not
decide the tier in either direction. Groups cover en/de/fr/es/pt/it/ru/zh/ja/ko; matching is case-insensitive
on the request's prose (pasted code and logs are cut out first), and every pattern is a plain
alternation of literals or short bounded classes, so matching stays linear in the text.
"""

from __future__ import annotations

import re

_F = re.IGNORECASE

# Asks for a proof, derivation or a formal guarantee.
PROOF = re.compile(
    r"\b(?:prove|proof|proofs|disprove|counter-?example|show that|derive|derivation|closed[- ]form|"
    r"is (?:it|this|that) (?:always|true|sound|possible|decidable)|for which|characteri[sz]e|"
    r"lower bound|upper bound|invariant|linearizab\w*|termination|(?:always|ever|it) terminates?|decidab\w+|"
    r"expected (?:number|value) of|"
    r"beweis\w*|zeige,? dass|démontre\w*|preuve|prouve\w*|demuestra\w*|demostraci\w+|prueba que|"
    r"prove que|demonstr\w+|dimostra\w*|докаж\w*|доказательств\w*)\b"
    r"|证明|証明|증명",
    _F,
)

# Asks for a design or a plan that must satisfy stated constraints and trade-offs.
DESIGN = re.compile(
    r"\b(?:design|redesign|architect\w*|trade-?offs?|formulat\w+|plan (?:the|it|how|a|for)|"
    r"migrat\w+|roll ?out|cut ?over|without downtime|zero[- ]downtime|incrementally|step by step plan|"
    r"propose|strategy|how would you|what would you|lay out|"
    r"entw\w*rf\w*|architektur|kompromiss\w*|plan:|concev\w+|conçoi\w*|conception|compromis|"
    r"diseñ\w+|arquitectura|compensaciones|projet\w+|desenh\w+|arquitetura|progett\w+|architettura|"
    r"спроектир\w*|архитектур\w*|план\w*)\b"
    r"|设计|架构|权衡|迁移|方案|設計|トレードオフ|移行|설계|아키텍처",
    _F,
)

# Symptoms that are intermittent or far from their cause: the diagnosis needs reasoning.
SYMPTOM = re.compile(
    r"\b(?:sometimes|occasionally|rarely|intermittent\w*|randomly|every (?:few|now and then)|"
    r"once (?:a|an|every|in)|(?:1|one) (?:in|out of) (?:every )?[\d,]+|only (?:when|on|in|with|if|after)|"
    r"but not (?:on|in|with)|after (?:we|I) (?:\w+ ){0,2}(?:moved|changed|upgraded|switched|added|enabled|"
    r"turned|rotated|increased|deployed|migrated)|under (?:heavy )?load|flaky|non-?determin\w+|"
    r"hangs?|freez\w+|stall\w*|drifts?|out of sync|can'?t reproduce|never reproduc\w+|no errors?|"
    r"passes (?:all )?(?:my |our |the )?tests|works (?:fine )?(?:on|in|locally)|in production|"
    r"manchmal|gelegentlich|nur (?:wenn|bei)|parfois|de temps en temps|seulement (?:quand|si)|"
    r"a veces|de vez en cuando|solo cuando|às vezes|ocasionalmente|apenas quando|a volte|"
    r"иногда|изредка|время от времени)\b"
    r"|偶尔|有时|时不时|まれに|時々|ときどき|たまに|가끔|때때로",
    _F,
)

# Hard constraints stated in the ask.
CONSTRAINT = re.compile(
    r"\b(?:must(?: not)?|never|guarantee\w*|exactly|at most|at least|no more than|within \d|"
    r"without (?:a |an |any )?\w+|even (?:if|when|during)|strict\w*|bit-?exact|"
    r"muss|darf nie|nie|ohne|garant\w+|doit|jamais|sans|debe|nunca|sin|deve|sem|не должн\w*|никогда|"
    r"без)\b"
    r"|必须|不能|保证|不会|必ず|保証|절대",
    _F,
)

# Contest/algorithm signals: input bounds, complexity targets, counting modulo a prime.
ALGO = re.compile(
    r"10\s*\^\s*\d|10\*\*\d|\d\s*[·x×*]\s*10|[≤≥]|<=\s*\d|\bO\([^)]{1,20}\)|\bmodulo\b|\bmod (?:a )?prime|"
    r"\b(?:queries|online|faster than|efficient\w*|algorithm\w*|complexity|up to \d)\b",
    _F,
)

# Review and diagnosis asks: find a cause, judge soundness, walk through failure sequences.
DIAGNOSE = re.compile(
    r"\b(?:root cause|find (?:the |all )?(?:bug|cause|leak|problem)s?|what(?:'s| is| could be) (?:going on|"
    r"happening|wrong|causing)|what could (?:cause|explain)|explain (?:what|why|how) (?:is|this|that|it) "
    r"(?:happen|can|could)\w*|where would you look|how would you (?:find|investigate|track|approach|go about|"
    r"prove|verify|reason)|walk (?:me )?through|is (?:this|it) (?:correct|safe|secure|sound|broken)|review|"
    r"audit|threat[- ]model\w*|attack\w*|weakness\w*|exploit\w*|all the ways|every way|sequences? of events|"
    r"interleaving\w*|analy[sz]e)\b"
    r"|原因|分析|調査|考えられる|원인|분석",
    _F,
)

# Easy asks: definitions, explanations of known concepts, routine code, one-liners, edits.
EASY_START = re.compile(
    r"^\W*(?:what(?:'s| is| are| does)|whats|explain|define|how (?:do|can|should) (?:i|you|we)|how to|"
    r"write|implement|create|add|convert|translate|rename|generate|give me|show me|summari[sz]e|make|"
    r"fix|regex|bash|sql|git|jq|awk|css|is it (?:safe|ok)|why (?:does|do|is|am)|can you|please|set up|"
    r"wie|was ist|schreib\w*|erkläre?|füge|comment|qu'est|écri\w+|explique\w*|cómo|como|qué es|"
    r"escrib\w+|explica\w*|o que é|escreva|come|cos'è|что такое|как|напиши|"
    r"如何|什么是|怎么|用|帮我|请|どう|とは|教えて|書いて|簡単に)",
    _F,
)

# The user asks for brevity or intuition: a sign of an explanation, not of deep work.
BREVITY = re.compile(
    r"\b(?:briefly|brief|short(?:ly)?|one paragraph|in (?:one|two|three|\d+) (?:sentences?|bullets?|"
    r"words|paragraphs?|lines?)|(?<!not )just (?:the|a)|simple terms|plain (?:english|terms)|"
    r"intuitiv\w*|eli5|"
    r"like i'?m \d+|high level|no (?:proofs?|math|matrices)|quick(?:ly)?|one-liner|kurz|bref|breve|"
    r"rapidement)\b"
    r"|简单|簡単|간단",
    _F,
)

# Conversation glue: acknowledgements, continuations, greetings.
CHATTER = re.compile(
    r"^\W*(?:ok(?:ay)?|yes|yep|no|nope|sure|thanks?|thank you|thx|continue|go on|keep going|go ahead|"
    r"hi|hello|hey|good (?:morning|evening)|never ?mind|try again|looks good|do it|perfect|great)\b",
    _F,
)

# Agent-style imperative edits of a named file or symbol.
AGENT_EDIT = re.compile(
    r"^\W*(?:rename|add|remove|delete|move|bump|update|run|commit|revert|undo|replace|extract|sort|"
    r"increase|decrease|change|open|create|convert|fix the (?:lint|flake8|eslint|type)|make the)\b",
    _F,
)

# Transform the pasted material: summarise, translate, proofread, reformat. The material's
# length says nothing about the difficulty.
TRANSFORM = re.compile(
    r"^\W*(?:summari[sz]e|tl;?dr|translate|proofread|rewrite|rephrase|reformat|format|turn (?:this|these)|"
    r"extract|list|write (?:release notes|a summary|a commit message)|fix (?:the )?(?:typos|grammar)|"
    r"fasse|übersetze|korrigiere|résume|traduis|corrige|resume|traduce|traduza|riassumi|traduci|"
    r"переведи|кратко|请把|翻译|总结|この文章|要約|翻訳|요약|번역)",
    _F,
)

# Quantities with units: scale and budget constraints stated in numbers.
QUANTITY = re.compile(
    r"\b\d[\d,.]*\s?(?:ms|µs|us|ns|s|sec|seconds?|minutes?|hours?|days?|k|m|b|tb|gb|mb|kb|%|x|rps|qps|"
    r"million|billion|users|nodes|services|devices|requests|events|writes|reads|lines|tables|modules|"
    r"partitions|replicas|regions)\b|\d+\s?%",
    _F,
)

GROUPS: dict[str, re.Pattern[str]] = {
    "proof": PROOF,
    "design": DESIGN,
    "symptom": SYMPTOM,
    "constraint": CONSTRAINT,
    "algo": ALGO,
    "diagnose": DIAGNOSE,
    "brevity": BREVITY,
    "quantity": QUANTITY,
}

# Groups matched at the start of the ask only.
OPENERS: dict[str, re.Pattern[str]] = {
    "easy_start": EASY_START,
    "chatter": CHATTER,
    "agent_edit": AGENT_EDIT,
    "transform": TRANSFORM,
}
