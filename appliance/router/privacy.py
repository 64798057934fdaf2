"""The privacy guard: find secrets and configured identifiers a request must not send to a cloud.

Built in: PEM private keys, AWS/GCP/Azure credentials, common API tokens, JWTs, credentials in
URLs, .env lines and hard-coded literals assigned to secret-named variables, and IBANs that
pass the mod-97 checksum (so random strings do not trigger). Extra named regexes come from the
config (national ids, medical record numbers, customer ids).

Why the care about false positives: a finding pins the request local, so code that merely
*mentions* a secret (`api_key = os.environ["X"]`, `PASSWORD=${DB_PASSWORD}`, "your-token-here")
must pass. Literal-prefixed token patterns are only run when their prefix occurs in the text
(a substring test), and every built-in regex has bounded repetitions, so a 100k-character
request is scanned in a few milliseconds. A Finding holds a span, never the matched text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class _Detector:
    kind: str
    pattern: re.Pattern[str]
    hints: tuple[str, ...] = ()  # run only if one occurs in the text (a cheap substring test)
    group: int = 0  # which group's span is the secret
    valid: Callable[[str], bool] | None = None
    word_start: bool = False  # the match must not continue a word (checked here, not by `\b`,
    # which would stop the regex engine from scanning for the literal prefix)


# --- value checks ---------------------------------------------------------------------------

_PLACEHOLDER = re.compile(
    r"^(?:x+|\*+|\.+|-+|_+|<[^>]*>|\{[^}]*\}|\$\{?[\w.:-]*\}?|%\(?\w*\)?s?|"
    r"(?:your|my|the|some|example|sample|dummy|fake|test|placeholder|changeme|change_me|redacted|secret|"
    r"password|passwd|pass|token|apikey|api_key|none|null|true|false|todo|xxx)[\w-]*)$",
    re.I,
)
# References and expressions: a variable, an env lookup or a call, not a value.
_REFERENCE = re.compile(r"(?:os\.environ|getenv|process\.env|ENV\[|config\.|settings\.|\$\{|\$\w|\w\(|\w\[)")


def _entropy(s: str) -> float:
    counts: dict[str, int] = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


_IDENTIFIER = re.compile(r"[A-Z][A-Z0-9_]*|[a-z][a-z0-9]*(?:_[a-z0-9]+)+|[a-z]+(?:[A-Z][a-z0-9]+)+")


def _random_looking(s: str) -> bool:
    """A machine-generated key: long, mixed letters and digits, high entropy, not an identifier
    (an env var name such as `E2E_ANTHROPIC_KEY` names a secret, it is not one)."""
    return (len(s) >= 16 and any(c.isdigit() for c in s) and any(c.isalpha() for c in s)
            and _entropy(s) >= 3.3 and not _IDENTIFIER.fullmatch(s))


def _real_value(s: str) -> bool:
    """A literal secret value, not a placeholder, a reference, a number or a plain URL."""
    v = s.strip().strip("'\"")
    if len(v) < 6 or _PLACEHOLDER.match(v) or _REFERENCE.search(v):
        return False
    return not re.fullmatch(r"[\d.]+|(?:https?|file)://[^@\s]*", v)


_IBAN_DIGITS = str.maketrans({chr(c): str(c - 55) for c in range(ord("A"), ord("Z") + 1)})


def _mod97(iban: str) -> bool:
    """ISO 13616: right length for the country, and (rearranged, letters as 10..35) mod 97 == 1."""
    s = iban.replace(" ", "")
    if IBAN_LENGTHS.get(s[:2]) != len(s):
        return False
    return int((s[4:] + s[:4]).translate(_IBAN_DIGITS)) % 97 == 1


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}

# --- the built-in detectors -------------------------------------------------------------------

_SECRET_NAME = r"(?:secret|passw(?:or)?d|pwd|token|key|credential)"


def _d(kind: str, regex: str, hints: tuple[str, ...] = (), group: int = 0,
       valid: Callable[[str], bool] | None = None, word_start: bool = False) -> _Detector:
    return _Detector(kind, re.compile(regex), hints, group, valid, word_start)


# Patterns start with a literal where possible: the regex engine then jumps between
# occurrences of it instead of trying every position (so no substring pre-check is needed).
BUILTIN: tuple[_Detector, ...] = (
    _d("private_key", r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----"),
    _d("aws_access_key", r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
       word_start=True),
    _d("aws_secret_key",
       r"(?i)aws_?secret_?(?:access_?)?key[\"']?\s{0,3}[:=]\s{0,3}[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
       ("aws", "AWS", "Aws"), 1),
    _d("gcp_service_account", r"\"type\"\s{0,3}:\s{0,3}\"service_account\""),
    _d("google_api_key", r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", word_start=True),
    _d("gcp_oauth_secret", r"GOCSPX-[A-Za-z0-9_-]{28}", word_start=True),
    _d("azure_storage_key", r"AccountKey=([A-Za-z0-9+/]{40,100}={0,2})", group=1),
    _d("azure_sas_token", r"sig=([A-Za-z0-9%+/]{40,120}(?:%3D|=){0,2})", group=1),
    _d("azure_client_secret", r"\dQ~[A-Za-z0-9_~.-]{31,34}(?![\w~.-])", ("Q~",)),  # 3 chars before: scan()
    _d("anthropic_key", r"sk-ant-[A-Za-z0-9_-]{32,200}", word_start=True),
    _d("openai_key", r"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,200}", valid=_random_looking,
       word_start=True),
    _d("github_token", r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})",
       word_start=True),
    _d("slack_token", r"xox[abposr]-[A-Za-z0-9-]{10,200}", word_start=True),
    _d("slack_webhook", r"hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,}"),
    _d("stripe_key", r"[sr]k_live_[A-Za-z0-9]{20,200}", word_start=True),
    _d("jwt", r"eyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{10,2000}",
       word_start=True),
    _d("url_credentials", r"://[^\s/:@]{1,64}:([^\s/@]{1,128})@", group=1, valid=_real_value),
    # .env style: an upper-case KEY naming a secret, then a literal value.
    _d("dotenv_secret",
       r"(?m)^[ \t]{0,8}(?:export[ \t]+)?[A-Z][A-Z0-9_]{0,60}?(?:SECRET|PASSWORD|PASSWD|PWD|TOKEN|API_?KEY|"
       r"ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)[A-Z0-9_]{0,40}[ \t]{0,8}=[ \t]{0,8}"
       r"(\"[^\"\n]{1,300}\"|'[^'\n]{1,300}'|[^\s#'\"]{1,300})[ \t]{0,40}(?:#[^\n]{0,300})?$",
       group=1, valid=_real_value),
    # Code: a quoted, machine-generated-looking literal assigned to a secret-named variable
    # (the name is checked in the text just before the literal, see scan()).
    _d("hardcoded_secret", r"[\"']([A-Za-z0-9_+/=.~-]{16,300})[\"']", group=1, valid=_random_looking),
    _d("iban", r"[A-Z][A-Z]\d\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])", valid=_mod97,
       word_start=True),
)
_SECRET_ASSIGNMENT = re.compile(_SECRET_NAME + r"\w{0,30}[\"']?\s{0,3}[:=]\s{0,3}\Z", re.I)
_AZURE_SECRET_HEAD = re.compile(r"[A-Za-z0-9_~.-]{3}\Z")
MAX_PER_KIND = 64  # enough to pin a request local; stops a paste of 10k IBANs costing seconds


def _word_start(text: str, i: int) -> bool:
    return i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")


def _context_ok(det: _Detector, text: str, m: re.Match[str]) -> bool:
    """Checks around a match that a regex could only do by giving up its fast scan."""
    start = m.start()
    if det.word_start and not _word_start(text, start):
        return False
    if det.kind == "hardcoded_secret":
        return bool(_SECRET_ASSIGNMENT.search(text, max(0, start - 48), start))
    if det.kind == "azure_client_secret":
        head = _AZURE_SECRET_HEAD.search(text, max(0, start - 3), start)
        return bool(head) and _word_start(text, start - 3)
    if det.kind == "azure_sas_token":
        return start > 0 and text[start - 1] in "?&"
    return True


# Generic detectors give way to a specific one covering the same span.
_GENERIC = {"dotenv_secret", "hardcoded_secret", "url_credentials"}


class PrivacyGuard:
    """Scans request text for secrets and configured identifiers; holds no request data."""

    def __init__(self, patterns: Mapping[str, str] | None = None) -> None:
        extra: list[_Detector] = []
        for name, regex in (patterns or {}).items():
            try:
                extra.append(_Detector(name, re.compile(regex)))
            except re.error as e:
                raise ValueError(f"privacy pattern {name!r} is not a valid regex: {e}") from e
        self.detectors: tuple[_Detector, ...] = (*BUILTIN, *extra)

    def scan(self, text: str) -> list[Finding]:
        """Every finding, ordered by position; the matched text itself is never kept."""
        found: list[Finding] = []
        for det in self.detectors:
            if det.hints and not any(h in text for h in det.hints):
                continue
            n = 0
            for m in det.pattern.finditer(text):
                if not _context_ok(det, text, m):
                    continue
                if det.valid is not None and not det.valid(m.group(det.group)):
                    continue
                start = m.start(det.group) - (3 if det.kind == "azure_client_secret" else 0)
                found.append(Finding(det.kind, start, m.end(det.group)))
                n += 1
                if n == MAX_PER_KIND:
                    break
        specific = [f for f in found if f.kind not in _GENERIC]
        kept = [f for f in found if f.kind not in _GENERIC
                or not any(s.start < f.end and f.start < s.end for s in specific)]
        return sorted(kept, key=lambda f: (f.start, f.end, f.kind))

    def kinds(self, text: str) -> list[str]:
        """The distinct kinds found, sorted: what a route reason may say."""
        return sorted({f.kind for f in self.scan(text)})
