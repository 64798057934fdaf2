"""The privacy guard: secrets and configured identifiers found, references and ordinary code not.

The secrets below are synthetic (right shape, random content); none is a live credential.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from appliance.router.privacy import Finding, PrivacyGuard

ROOT = Path(__file__).resolve().parents[1]

SECRETS = {
    "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH "
                   "PRIVATE KEY-----",
    "aws_access_key": "aws configure set aws_access_key_id AKIAQ3EGRT5YJ2MXW7PN",
    "aws_secret_key": "aws_secret_access_key = 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",
    "gcp_service_account": '{"type": "service_account", "project_id": "acme-prod"}',
    "google_api_key": "const maps = 'AIzaSyD4x9Qw7Er2Ty5Ui8Op1As3Df6Gh9Jk2Lz';",
    "azure_storage_key": "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey="
                         + "Qm9ndXNLZXlGb3JUZXN0aW5nT25seTEyMzQ1Njc4OTAxMjM0NTY3ODkw"
                         + "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNA==;EndpointSuffix=core.windows.net",
    "anthropic_key": "ANTHROPIC_API_KEY=sk-ant-api03-Zx8Kq2Lm4Np6Rt8Vw0Yb2Dc4Fg6Hj8Kl0Mn2Pq4Rs6Tu8Vw0Xy",
    "openai_key": "client = OpenAI(api_key='sk-proj-7Hk2Qm9Xr4Tz8Wc1Vb6Nd3Lp5Jg0Fs2Ya4Ue7Io9')",
    "github_token": "git clone https://x:ghp_R4nd0mT0k3nV4lu3F0rT3st1ngOnly123456@github.com/acme/app",
    "slack_token": "SLACK=xoxb-2048193847-5738291046-QwErTyUiOpAsDfGhJkLzXcVb",
    "stripe_key": "stripe.api_key = 'sk_live_51Hq2Rk8Tm4Xz9Wc3Vb7Nd'",
    "jwt": "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJlLXBhcnQtaGVyZQ",
    "url_credentials": "DATABASE_URL=postgres://billing:Tr0ub4dor-and-3@db.internal:5432/ledger",
    "dotenv_secret": "DEBUG=false\nSESSION_SECRET=kj3h4k5j6h7g8f9d\nPORT=8080",
    "hardcoded_secret": 'self.signing_key = "f3a9c27e5b814d06a7e2c9b1d4f8e6a3c5b7d9e1"',
    "iban": "Please wire the refund to DE89 3704 0044 0532 0130 00 by Friday.",
}


@pytest.mark.parametrize(("kind", "text"), SECRETS.items())
def test_builtin_secret_is_found_with_its_span(kind: str, text: str) -> None:
    findings = PrivacyGuard().scan(text)
    assert kind in {f.kind for f in findings}, findings
    f = next(f for f in findings if f.kind == kind)
    assert 0 <= f.start < f.end <= len(text)


def test_finding_holds_a_span_not_the_secret() -> None:
    text = "key: AKIAQ3EGRT5YJ2MXW7PN"
    (f,) = PrivacyGuard().scan(text)
    assert f == Finding("aws_access_key", 5, 25)
    assert text[f.start:f.end] == "AKIAQ3EGRT5YJ2MXW7PN"
    assert "AKIA" not in repr(f)


@pytest.mark.parametrize("iban", ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432",
                                  "NL91ABNA0417164300", "FR14 2004 1010 0505 0001 3M02 606"])
def test_checksummed_iban_is_found(iban: str) -> None:
    assert [f.kind for f in PrivacyGuard().scan(f"account {iban}.")] == ["iban"]


@pytest.mark.parametrize("text", [
    "account DE89 3704 0044 0532 0130 01",  # one digit off: checksum fails
    "account DE12 3456 7890 1234 5678 90",
    "order id GB12ABCD34567890123456 shipped",
    "build XK99 0000 0000 0000 00",
    "serial AB12CD34EF56GH78",
])
def test_iban_shaped_noise_is_not(text: str) -> None:
    assert PrivacyGuard().scan(text) == []


@pytest.mark.parametrize("text", [
    'api_key = os.environ["OPENAI_API_KEY"]',
    "token = get_token(user)",
    "password = input('Password: ')",
    "PASSWORD=${DB_PASSWORD}",
    "OPENAI_API_KEY=your-key-here",
    "AWS_SECRET_ACCESS_KEY=<your secret>",
    "TOKEN_TTL_SECONDS=3600",
    "export GITHUB_TOKEN=$GH_TOKEN",
    "DATABASE_URL=postgres://user:password@localhost:5432/app",
    'headers = {"Authorization": f"Bearer {token}"}',
    'settings.api_key_env = "E2E_ANTHROPIC_KEY"',
    "const apiKey = process.env.STRIPE_KEY;",
    "the key is in sk-learn's docs, ask-me-anything-about-it-please-and-thanks-a-lot",
])
def test_references_and_placeholders_are_not_secrets(text: str) -> None:
    assert PrivacyGuard().scan(text) == []


def test_ordinary_code_has_no_findings() -> None:
    """Our own product source mentions keys, tokens and passwords everywhere; it holds none."""
    guard = PrivacyGuard()
    files = sorted((ROOT / "appliance").rglob("*.py")) + sorted((ROOT / "runtimes").rglob("*.py"))
    assert len(files) > 30
    hits = {str(p.relative_to(ROOT)): guard.kinds(p.read_text()) for p in files}
    assert {p: k for p, k in hits.items() if k} == {}


def test_configured_patterns_find_identifiers() -> None:
    guard = PrivacyGuard({
        "national_id": r"\b\d{3}-\d{2}-\d{4}\b",
        "medical_record": r"\bMRN[-: ]?\d{7,8}\b",
        "customer_id": r"\bCUST-[A-Z0-9]{6}\b",
    })
    text = "Patient MRN 1234567 (SSN 078-05-1120), account CUST-9QX2ZK, asks about her refill."
    assert guard.kinds(text) == ["customer_id", "medical_record", "national_id"]
    assert guard.kinds("Order 1234567 for 3 items") == []


def test_bad_configured_pattern_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="customer_id"):
        PrivacyGuard({"customer_id": "CUST-(["})


@pytest.mark.parametrize("text", [
    "a" * 100_000,
    "=" * 100_000,
    "\"'" * 50_000,
    "DE12 3456 7890 " * 7_000,
    "password token secret api_key = " * 3_000,
    "KEY=value\n" * 10_000,
    "eyJ" * 33_000,
    "sk-" * 33_000,
])
def test_100k_characters_scan_in_linear_time(text: str) -> None:
    guard = PrivacyGuard()
    start = time.perf_counter()
    guard.scan(text)
    assert time.perf_counter() - start < 0.5  # catastrophic backtracking would take minutes
