"""A stand-in masker for record tests: masks one known secret everywhere, as Masker.mask_for_record does."""

from __future__ import annotations

import copy
from typing import Any

SECRET = "AKIAZZZZSECRETVALUE1"


class FakeMasker:
    """Masks every occurrence of SECRET in every string, thinking included, like Masker.mask_for_record."""

    def mask_for_record(self, obj: Any) -> tuple[Any, list[dict[str, str]]]:
        findings: list[dict[str, str]] = []

        def walk(o: Any, where: str) -> Any:
            if isinstance(o, str):
                if SECRET in o:
                    findings.append({"rule": "aws-access-key-id", "where": where, "fingerprint": "abc123"})
                    return o.replace(SECRET, "[MASKED:aws-access-key-id:abc123]")
                return o
            if isinstance(o, dict):
                return {k: walk(v, f"{where}.{k}" if where else k) for k, v in o.items()}
            if isinstance(o, list):
                return [walk(v, f"{where}[{i}]") for i, v in enumerate(o)]
            return o

        return walk(copy.deepcopy(obj), ""), findings

    def mask_text(self, text: str, where: str = "") -> tuple[str, list[dict[str, str]]]:
        masked, findings = self.mask_for_record(text)
        return masked, [dict(f, where=where) for f in findings]

