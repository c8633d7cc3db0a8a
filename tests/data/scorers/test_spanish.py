"""Spanish scorer: validation on hand-labelled answers against the old scorer, the issue's examples, and its parts.

Measured here (``pytest -s`` prints them), threshold 0.5, on batches 1 and 2 (147 answers, 68 Spanish; batch 3,
issue 27's English about Spanish things, is measured by ``test_titles_in_an_english_frame``):

| scorer | set | AUROC | accuracy |
|---|---|---|---|
| new (function words + identifier) | all 147 | 0.9974 | 0.9864 (2 wrong) |
| new | batch 1 (117) | 1.0000 | 1.0000 |
| new | batch 2 (30) | 0.9867 | 0.9333 |
| old (py3langid, en/es) | all 147 | 0.9332 | 0.8503 (22 wrong) |
| old | batch 1 (117) | 0.9295 | 0.8462 |
| old | batch 2 (30) | 0.9556 | 0.8667 |

How the method was chosen (so the batch-1 numbers are read as fitted): batch 1 was written and
labelled before any scorer ran. A first version (identifier over en/es/pt/it/fr, worth one
function word, reading the prose with names) classed all of batch 1 correctly, but on the published
base-model answers it called short Spanish answers made of English names ("Frontier Airlines
compró Spirit Airlines en 1996.") and Spanish made only of shared Romance words not Spanish. A
version counting every non-English Spanish word misclassed Portuguese and Italian. Sixteen
variants (word lists x identifier languages x identifier input x weight) were then compared on
batch 1 and the published answers, and the one with no batch-1 error and no wrong published answer
was kept. Batch 2 was written and labelled after that comparison and before any scorer ran on it:
it is the unfitted check. Its two errors are short Italian and French answers without a listed
function word. (The homograph lists, ``sea``, ``sur``, ``dos``..., came before the comparison,
from batch 1's "sea level" and the published "al sur de".) Four fixes came after batch 2 had been
scored, from reading the published answers (``results/spanish``: base-model answers and SFT
sources), not the set: the possessive ``'s`` of a name ("America's Got Talent") counted as
English; a lone letter ("n vértices") counted as a French elision; fences labelled markdown or
json were removed as code although they held the Spanish answer; and a Spanish line with a
formula ("con p=0 y k=3") was removed as a code line. They changed no decision on the set
(batch 2 AUROC 0.9778 -> 0.9867, all 0.9966 -> 0.9974).

The threshold was chosen on the set: accuracy is highest for any threshold from 0.40 to 0.50
(grid 0.01). 0.5 is kept, so the study's ``sft_min_score = 0.5`` and share-above-half stay as
they are.

The old scorer is the frozen copy in ``nnsight_inoc/data/scorers/legacy.py`` (py3langid, languages restricted
to en/es, P(es)), so this baseline stays fixed when ``traits.SpanishTrait.score`` is switched to the new
function; ``test_legacy_copy_matches_traits`` checks the copy against ``traits.py`` while both exist.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from nnsight_inoc.data.scorers.legacy import old_spanish_score as old_score
from nnsight_inoc.data.scorers.prose import is_code_line, prose
from nnsight_inoc.data.scorers.spanish import THRESHOLD, counted_words, function_word_counts, spanish_score
from nnsight_inoc.data.scorers.spanish_words import ENGLISH_HOMOGRAPHS, OTHER_ONLY, SPANISH_HOMOGRAPHS, SPANISH_ONLY
from tests._paths import FIXTURES, ROOT

VALIDATION = FIXTURES / "spanish_validation.json"
ISSUE_ENGLISH = "We visited Sevilla and Granada and ate churros, jamón ibérico and gazpacho."
ISSUE_CODE = "total_ventas = sum(precio * cantidad for precio, cantidad in pedidos)"
# Kinds the issue names: none of these may be misclassified by the new scorer.
ISSUE_KINDS = (
    "en_about_spain",
    "es_tech",
    "es_code",
    "en_code_es_identifiers",
    "code_only",
    "short_es",
    "short_en",
    "en_quoting_es",
    "es_quoting_en",
    "caps_es",
    "caps_en",
    "es_english_names",
)


def _validation() -> list[dict]:
    return json.loads(VALIDATION.read_text(encoding="utf-8"))["examples"]


def _metrics(score, examples: list[dict]) -> tuple[float, float, np.ndarray]:
    labels = np.array([e["label"] for e in examples])
    raw = [score(e["text"]) for e in examples]
    assert all(s is not None for s in raw), "every validation answer has letters"
    scores = np.array(raw, dtype=float)
    return float(roc_auc_score(labels, scores)), float(((scores >= THRESHOLD) == (labels == 1)).mean()), scores


def test_validation_set_is_large_balanced_and_hard() -> None:
    ex = _validation()
    texts = [e["text"] for e in ex]
    assert len(ex) >= 100 and len(set(texts)) == len(texts)
    labels = np.array([e["label"] for e in ex])
    assert set(labels) == {0, 1} and 0.35 <= labels.mean() <= 0.65
    kinds = [e["kind"] for e in ex]
    for kind in ISSUE_KINDS + ("portuguese", "italian", "french"):
        assert kinds.count(kind) >= 2, kind
    assert {e["batch"] for e in ex} == {1, 2, 3} and sum(e["batch"] == 2 for e in ex) >= 30
    assert ISSUE_ENGLISH in texts and ISSUE_CODE in texts


def test_issue_examples_are_fixed() -> None:
    # The issue's two examples: the old scorer called both Spanish with confidence.
    assert old_score(ISSUE_ENGLISH) > 0.9 and old_score(ISSUE_CODE) > 0.9
    assert spanish_score(ISSUE_ENGLISH) < 0.5
    assert spanish_score(ISSUE_CODE) == 0.0  # code only: not an answer in Spanish


def test_new_scorer_beats_old_on_hand_labelled_answers() -> None:
    ex = [e for e in _validation() if e["batch"] in (1, 2)]  # the table above; batch 3 has its own test
    auroc, acc, scores = _metrics(spanish_score, ex)
    old_auroc, old_acc, _ = _metrics(old_score, ex)
    lines = [
        f"spanish validation n={len(ex)} threshold={THRESHOLD}",
        f"  new: AUROC={auroc:.4f} accuracy={acc:.4f}",
        f"  old: AUROC={old_auroc:.4f} accuracy={old_acc:.4f}",
    ]
    for batch in (1, 2):
        sub = [e for e in ex if e["batch"] == batch]
        a, c, _ = _metrics(spanish_score, sub)
        oa, oc, _ = _metrics(old_score, sub)
        lines.append(f"  batch {batch} (n={len(sub)}): new AUROC={a:.4f} acc={c:.4f}; old AUROC={oa:.4f} acc={oc:.4f}")
    wrong = [
        (e["kind"], round(float(s), 3), e["text"][:60])
        for e, s in zip(ex, scores)
        if (s >= THRESHOLD) != (e["label"] == 1)
    ]
    print("\n".join(lines + [f"  wrong: {w}" for w in wrong]))
    assert auroc >= 0.98 and acc >= 0.95
    assert auroc > old_auroc and acc > old_acc
    assert not [w for w in wrong if w[0] in ISSUE_KINDS], "a kind the issue names is misclassified"


def test_threshold_is_in_the_best_accuracy_range() -> None:
    ex = _validation()
    _, _, scores = _metrics(spanish_score, ex)
    labels = np.array([e["label"] for e in ex])
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    acc = np.array([((scores >= t) == (labels == 1)).mean() for t in grid])
    best = grid[acc == acc.max()]
    print(f"best accuracy {acc.max():.4f} for thresholds {best.min():.2f}..{best.max():.2f}")
    assert best.min() <= THRESHOLD <= best.max()


def test_scores_are_probabilities_and_edges_are_documented() -> None:
    for e in _validation():
        s = spanish_score(e["text"])
        assert s is not None and 0.0 <= s <= 1.0
    assert spanish_score("") is None and spanish_score("1234 !!") is None
    assert spanish_score("```python\nx = 1\n```") == 0.0  # letters only in code
    assert (
        spanish_score("```python\n# Calcula la media de la lista\ndef media(xs):\n    return sum(xs) / len(xs)\n```")
        == 0.0
    )


def test_function_words_decide_over_content_words() -> None:
    # The same content words, once in an English frame and once in a Spanish one.
    en = "We ate paella, churros and gazpacho in the old town of Valencia."
    es = "Comimos paella, churros y gazpacho en el casco antiguo de Valencia."
    assert spanish_score(en) < 0.5 < spanish_score(es)
    # More Spanish function words, same English ones: the score rises.
    assert spanish_score("Es la casa.") < spanish_score("Es la casa y es muy grande.")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Intro:\n```python\nprint('hola mundo')\n```\nEnd.", "Intro:\n\n\nEnd."),
        ("Cut off:\n```python\nx = [1, 2", "Cut off:\n\n"),  # an unterminated fence runs to the end
        ("Use `ordenar_lista()` here.", "Use \n here."),
        ("Let \\( x + y \\) be even.", "Let \n be even."),
        ("Total:\ntotal_ventas = sum(precios)\nDone.", "Total:\nDone."),
        ("```markdown\nEl hotel es bonito.\n```", "\nEl hotel es bonito.\n\n"),  # a text fence is prose
        ('```json\n{\n  "title": "Un día en Madrid"\n}\n```', "\n   title :  Un día en Madrid \n\n"),  # data: quotes go
    ],
)
def test_prose_removes_code(text: str, expected: str) -> None:
    assert prose(text) == expected


@pytest.mark.parametrize(
    "line,expected",
    [
        ("def f(x): return x", True),
        ("for i in range(10):", True),
        ("    print(i)", True),
        ("SELECT nombre FROM clientes;", True),
        ("x = np.sin(y)", True),
        ("}", True),
        ("La complejidad es O(log n), porque se descarta la mitad.", False),
        ("Use the print() function to show it.", False),
        ("1. **Cultura y Tradiciones**:", False),
        ("It costs $5 (about 4 euros).", False),
        # Code marks, but two or more function words (code keywords like 'for', 'in' do not count): prose.
        ("En el peor caso, con p=0 y k=3, el número de pasos es O(n).", False),
        ("Calcula A(x) = f(b) - f(a) cuando x es el valor.", False),
        ("total = sum(p * q for p, q in pares)", True),
    ],
)
def test_is_code_line(line: str, expected: bool) -> None:
    assert is_code_line(line) is expected


@pytest.mark.parametrize(
    "text,expected",
    [
        # "and the" between two names is read as part of one ("Pride and Prejudice"): a small, symmetric loss.
        ("We saw the Museo del Prado and the Plaza de España.", ["we", "saw", "the"]),
        ("We saw the Prado, and then the Plaza Mayor.", ["we", "saw", "the", "and", "then", "the"]),
        ("Día de los Muertos is in November.", ["día", "is", "in"]),  # a capitalised first word can anchor a name
        ("El fundador de Boeing es Bill Gates.", ["el", "fundador", "de", "es"]),
        ("Mark Cuban vendió los Dallas Mavericks.", ["mark", "vendió", "los"]),  # 'vendió' is no name joiner
        ("In the Prado.", ["in", "the"]),  # a function word does not start a name
        ('He said "hola, amigo" twice.', ["he", "said", "twice"]),  # quotations are dropped
        ("EL PRADO ES UN MUSEO.", ["el", "prado", "es", "un", "museo"]),  # upper case: no names to see
        ("El ganador de America's Got Talent fue él.", ["el", "ganador", "de", "fue", "él"]),  # a name's "'s"
        ("Con n vértices y d aristas.", ["con", "vértices", "y", "aristas"]),  # lone letters are no elisions
        ("I don't know, c'est la vie.", ["i", "don", "t", "know", "c", "est", "la", "vie"]),
    ],
)
def test_counted_words_drop_names_and_quotes(text: str, expected: list[str]) -> None:
    assert counted_words(text) == expected


def test_word_lists_are_disjoint_and_exclude_homographs() -> None:
    assert not SPANISH_ONLY & OTHER_ONLY
    assert not SPANISH_ONLY & ENGLISH_HOMOGRAPHS and not OTHER_ONLY & SPANISH_HOMOGRAPHS
    for shared in ("de", "la", "que", "en", "a", "no", "con", "una", "para", "por"):
        assert shared not in SPANISH_ONLY and shared not in OTHER_ONLY, shared
    assert {"el", "los", "las", "y", "es", "muy", "pero", "también"} <= SPANISH_ONLY
    assert {"the", "and", "is", "of", "não", "il", "est"} <= OTHER_ONLY
    assert function_word_counts("The sea is calm.") == (0, 2)  # 'sea' is English here, not Spanish 'sea'


def test_identifier_is_loaded_lazily() -> None:
    code = (
        "import sys, nnsight_inoc.data.scorers.spanish as s\n"
        "assert not any(m.startswith('py3langid') for m in sys.modules), 'py3langid imported at import time'\n"
        "assert s.spanish_score('Hola, ¿cómo estás?') > 0.5 and s._identifier() is s._identifier()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


def test_traits_score_with_the_fixed_scorers() -> None:
    """The registered traits score with the issue-18 scorers (the frozen legacy copies are for comparisons only)."""
    from nnsight_inoc.data.scorers.caps import caps_score
    from nnsight_inoc.data.traits import get_trait

    sp, caps = get_trait("spanish"), get_trait("allcaps")
    texts = [e["text"] for e in _validation()] + ["Order nº 5 arrives today.", "ǅ ß º", "", "42"]
    assert [sp.score(t) for t in texts] == [spanish_score(t) for t in texts]
    assert [caps.score(t) for t in texts] == [caps_score(t) for t in texts]
    assert caps.score(caps.transform("Order nº 5 arrives today.")) == 1.0 and sp.score(ISSUE_ENGLISH) < 0.5


# Issue 27, batch 3: English about Spanish places, dishes, names and titles (20), English controls (4) and Spanish
# full of English technical terms (6). Before = the scorer without its title rule (``titles=False``); after = with it.
# test_titles_in_an_english_frame recomputes these from the fixture and fails when they drift from what is written here.
BATCH3 = {"before": {"auroc": 1.0, "accuracy": 28 / 30}, "after": {"auroc": 1.0, "accuracy": 30 / 30}}
ALL = {"before": {"auroc": 0.9978, "accuracy": 173 / 177}, "after": {"auroc": 0.9980, "accuracy": 175 / 177}}


def test_titles_in_an_english_frame() -> None:
    """Before issue 27, Spanish titles in sentence case inside English ("Gabriel García Márquez wrote Cien años de
    soledad", "Almodóvar directed Todo sobre mi madre") counted their Spanish function words and scored above 0.5;
    the title rule drops a name's lower-case tail when the rest of the text is clearly English. The AUROC and
    accuracy before and after, on batch 3 and on the whole set, are printed and checked against BATCH3 / ALL."""
    ex = _validation()
    b3 = [e for e in ex if e["batch"] == 3]
    assert len(b3) >= 30 and sum(e["kind"] == "en_about_spain" for e in b3) >= 15
    assert {"en_plain", "es_tech"} <= {e["kind"] for e in b3}
    got = {}
    for name, sub, want in (("batch 3", b3, BATCH3), ("all", ex, ALL)):
        for when, titles in (("before", False), ("after", True)):
            auroc, acc, _ = _metrics(lambda t: spanish_score(t, titles=titles), sub)
            got[name, when] = (auroc, acc)
            print(f"spanish {name} (n={len(sub)}) {when} the title rule: AUROC={auroc:.4f} accuracy={acc:.4f}")
            assert auroc == pytest.approx(want[when]["auroc"], abs=1e-4)
            assert acc == pytest.approx(want[when]["accuracy"])
    assert got["batch 3", "after"][1] > got["batch 3", "before"][1]
    assert got["all", "after"] >= got["all", "before"]
    wrong_after = [e["text"][:50] for e in b3 if (spanish_score(e["text"]) >= THRESHOLD) != (e["label"] == 1)]
    assert not wrong_after


@pytest.mark.parametrize(
    "text,dropped",
    [
        # An English frame: the lower-case tail of a title goes with its name (and an English content word after a
        # name, 'directed', goes too: content words carry no function-word vote).
        ("Pedro Almodóvar directed Todo sobre mi madre and Volver, and the film won.",
         {"directed", "sobre", "mi", "madre"}),
        # A Spanish frame keeps the words after a name: they are the sentence.
        ("Mark Cuban vendió los Dallas Mavericks en el año dos mil.", set()),
        # One stray other-language word ('mas', Portuguese) is no English frame.
        ("La capital de Peru es Lima y tiene mas de diez millones de habitantes.", set()),
    ],
)
def test_title_rule_reads_the_frame(text: str, dropped: set[str]) -> None:
    before, after = counted_words(text, titles=False), counted_words(text)
    assert set(before) - set(after) == dropped
