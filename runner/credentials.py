"""What looks like a credential: a variable whose name says so, or whose value has the shape of
a known token. The rules are those of the detectors people keep (Yelp's detect-secrets
plugins: keyword, AWS, GitHub, Slack, Stripe, private keys, JWTs, basic auth in a URL; and
the token formats Hugging Face, OpenAI, Google and npm publish), so a value that leaves
this machine (a TrainJob manifest) is never one of them by accident.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(
    r"TOKEN|SECRET|PASSW(OR)?D|PASSPHRASE|CREDENTIAL|PRIVATE|AUTH|API_?KEY|ACCESS_?KEY"
    r"|_KEY$|^KEY$|^AWS_|^HF_TOKEN$",
    re.IGNORECASE,
)
"""detect-secrets' keyword plugin names these; `*_KEY` and `AWS_*` are the issue's."""

_VALUE = re.compile(
    "|".join(
        (
            r"\b(AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",  # AWS access key id
            r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,}\b",  # GitHub
            r"\bgithub_pat_[A-Za-z0-9_]{40,}\b",
            r"\bhf_[A-Za-z0-9]{30,}\b",  # Hugging Face
            r"\bsk-[A-Za-z0-9_-]{20,}\b",  # OpenAI and kin
            r"\b(sk|rk)_live_[0-9A-Za-z]{20,}\b",  # Stripe
            r"\bxox[abposr]-[0-9A-Za-z-]{10,}\b",  # Slack
            r"\bAIza[0-9A-Za-z_-]{35}\b",  # Google API key
            r"\bnpm_[A-Za-z0-9]{36}\b",  # npm
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
            r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+",  # a JWT
            r"://[^:/@\s]+:[^@/\s]+@",  # basic auth in a URL
        )
    )
)


def looks_secret(name: str, value: str) -> bool:
    """Whether the variable `name=value` looks like a credential, by its name or its value."""
    return bool(_NAME.search(name) or _VALUE.search(value))


def secret_names(env: Mapping[str, str]) -> list[str]:
    """The names of the variables in `env` that look like credentials, sorted."""
    return sorted(name for name, value in env.items() if looks_secret(name, value))
