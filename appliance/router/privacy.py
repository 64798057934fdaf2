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
    prefixes: tuple[str, ...] = ()  # run only if one occurs in the text (cheap pre-filter)
    group: int = 0  # which group's span is the secret
    valid: Callable[[str], bool] | None = None


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


def _random_looking(s: str) -> bool:
    """A machine-generated key: long, mixed letters and digits, high entropy."""
    return (len(s) >= 16 and any(c.isdigit() for c in s) and any(c.isalpha() for c in s)
            and _entropy(s) >= 3.3)


def _real_value(s: str) -> bool:
    """A literal secret value, not a placeholder, a reference, a number or a plain URL."""
    v = s.strip().strip("'\"")
    if len(v) < 6 or _PLACEHOLDER.match(v) or _REFERENCE.search(v):
        return False
    return not re.fullmatch(r"[\d.]+|(?:https?|file)://[^@\s]*", v)


def _mod97(iban: str) -> bool:
    s = iban.replace(" ", "").upper()
    if IBAN_LENGTHS.get(s[:2]) != len(s):
        return False
    digits = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(digits) % 97 == 1


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

_SECRET_NAME = (r"(?:secret|passw(?:or)?d|pwd|token|api_?key|access_?key|private_?key|client_?secret|"
                r"auth_?key)")
_GITHUB_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")


def _d(kind: str, regex: str, prefixes: tuple[str, ...] = (), group: int = 0,
       valid: Callable[[str], bool] | None = None) -> _Detector:
    return _Detector(kind, re.compile(regex), prefixes, group, valid)


BUILTIN: tuple[_Detector, ...] = (
    _d("private_key", r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----", ("PRIVATE KEY",)),
    _d("aws_access_key", r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b", ("AKIA", "ASIA", "ABIA", "ACCA")),
    _d("aws_secret_key",
       r"(?i)aws_?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
       ("aws", "AWS"), 1),
    _d("gcp_service_account", r"\"type\"\s*:\s*\"service_account\"", ("service_account",)),
    _d("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", ("AIza",)),
    _d("gcp_oauth_secret", r"\bGOCSPX-[A-Za-z0-9_-]{28}", ("GOCSPX-",)),
    _d("azure_storage_key", r"AccountKey=([A-Za-z0-9+/]{86}==)", ("AccountKey=",), 1),
    _d("azure_sas_token", r"[?&]sig=([A-Za-z0-9%+/]{40,120}(?:%3D|=){0,2})", ("sig=",), 1),
    _d("azure_client_secret",
       r"(?<![\w~.-])[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}(?![\w~.-])", ("Q~",)),
    _d("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{32,200}", ("sk-ant-",)),
    _d("openai_key", r"\bsk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,200}", ("sk-",),
       valid=_random_looking),
    _d("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})",
       _GITHUB_PREFIXES),
    _d("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,200}", ("xox",)),
    _d("slack_webhook", r"hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,}",
       ("hooks.slack.com",)),
    _d("stripe_key", r"\b(?:sk|rk)_live_[A-Za-z0-9]{20,200}", ("_live_",)),
    _d("jwt", r"\beyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{10,2000}", ("eyJ",)),
    _d("url_credentials", r"\b[a-z][a-z0-9+.-]{1,15}://[^\s/:@]{1,64}:([^\s/@]{1,128})@", ("://",), 1,
       _real_value),
    # .env style: an upper-case KEY naming a secret, then a literal value.
    _d("dotenv_secret",
       r"(?m)^[ \t]*(?:export[ \t]+)?[A-Z][A-Z0-9_]{0,60}?(?:SECRET|PASSWORD|PASSWD|PWD|TOKEN|API_?KEY|"
       r"ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)[A-Z0-9_]{0,40}[ \t]*=[ \t]*([^\s#][^\n#]{0,300})",
       ("=",), 1, _real_value),
    # Code: a secret-named variable assigned a quoted, machine-generated-looking literal.
    _d("hardcoded_secret",
       r"(?i)" + _SECRET_NAME + r"\w{0,30}[\"']?\s{0,3}[:=]\s{0,3}[\"']([^\"'\s]{16,300})[\"']",
       ("=", ":"), 1, _random_looking),
    _d("iban", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", valid=_mod97),
)

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
            if det.prefixes and not any(p in text for p in det.prefixes):
                continue
            for m in det.pattern.finditer(text):
                if det.valid is not None and not det.valid(m.group(det.group)):
                    continue
                found.append(Finding(det.kind, m.start(det.group), m.end(det.group)))
        specific = [f for f in found if f.kind not in _GENERIC]
        kept = [f for f in found if f.kind not in _GENERIC
                or not any(s.start < f.end and f.start < s.end for s in specific)]
        return sorted(kept, key=lambda f: (f.start, f.end, f.kind))

    def kinds(self, text: str) -> list[str]:
        """The distinct kinds found, sorted: what a route reason may say."""
        return sorted({f.kind for f in self.scan(text)})
