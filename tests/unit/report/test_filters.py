"""The pages' Jinja filters: masked spans escaped then marked, JSON that cannot close its script."""

from __future__ import annotations

import json

from gatehouse.report.filters import count_masks, json_for_script, masked_text


def test_masked_text_escapes_then_marks() -> None:
    out = str(masked_text("<i>x</i> [MASKED:github-pat:0a1b2c] & [MASKED:<b>:zz]"))
    assert out.startswith('&lt;i&gt;x&lt;/i&gt; <mark class="mask" data-rule="github-pat"')
    assert "&amp; [MASKED:&lt;b&gt;:zz]" in out
    assert count_masks("a [MASKED:r-1:abcdef] b [MASKED:r-1:abcdef]") == 2


def test_json_for_script_cannot_close_the_script() -> None:
    s = str(json_for_script({"a": "</script><!-- & >"}))
    assert "<" not in s and ">" not in s and "&" not in s
    assert json.loads(s) == {"a": "</script><!-- & >"}
