"""Spanish score: P(the answer is in Spanish) from function words, with a language identifier as a second vote.

Why not the identifier alone: the old score was py3langid's P(es) with only English and
Spanish allowed. Character n-grams are swayed by content words, so English full of Spanish
names and food scored as Spanish ("We visited Sevilla and Granada and ate churros, jamón
ibérico and gazpacho." 0.93), a line of code with Spanish identifiers too (0.97), and
Portuguese, Italian and French scored about 1 because Spanish was the only Romance language
allowed (issue 18, part D). Function words (articles, pronouns, prepositions, the commonest
verb forms) carry the language of a sentence whatever it is about.

Method, in four steps:

1. **Prose only.** Code is removed by :func:`nnsight_inoc.data.scorers.prose.prose`: fenced
   blocks (not those labelled markdown, text, json or yaml, whose content is prose), inline
   code, LaTeX math, and code-like lines. No letters at all: None. Letters only in code: 0.0
   (an answer made of code is not an answer in Spanish, whatever its identifiers or comments
   are in).
2. **Quotations and names do not count.** Text in double quotes, curly quotes, guillemets
   or word-bounded single quotes is dropped (an answer is in its own language, not the one
   it quotes). In mixed-case prose a capitalised word not at the start of a sentence is a
   name, and so are up to two name joiners (``de``, ``del``, ``la``, ``los``, ``y``, ``of``,
   ``the``, ``and``, ...) joined by spaces or hyphens to a capitalised non-function word
   before and a capitalised word after ("Plaza de España", "Día de los Muertos"). In an English
   frame (issue 27) a name's lower-case tail is a title and goes with it ("wrote Cien años de
   soledad", "directed Todo sobre mi madre"): see :func:`_titles`. Prose that
   is mostly upper case (``caps_score`` > 0.5: the ALL-CAPS trait) shows no names, so
   nothing is dropped there. Words are split at apostrophes; the piece after a name's
   apostrophe belongs to the name ("America's"), and an elision piece (``s``, ``t``, ``l``,
   ``d``...) counts only next to an apostrophe (a lone "n" is a variable).
3. **Function words.** Of the words left, ``n_es`` are in
   :data:`~nnsight_inoc.data.scorers.spanish_words.SPANISH_ONLY` and ``n_other`` in ``OTHER_ONLY``
   (English, Portuguese, Italian, French). A word both sides use counts for neither.
4. **Score** ``(n_es + w * p) / (n_es + n_other + w)`` with ``w =`` :data:`IDENTIFIER_WEIGHT`
   (2), where ``p`` is py3langid's P(es) among :data:`LANGUAGES` (en, es, as before) on the
   words of step 2 joined by spaces (on the lower-cased prose when none are left). The
   identifier is worth two function words: it decides short answers with few function
   words, and function words outvote it as answers grow.

Validation: 147 hand-written, hand-labelled answers (``tests/fixtures/spanish_validation.json``,
68 Spanish; 17 kinds, 15 of them hard cases). With the threshold 0.5, accuracy is 0.986 and AUROC 0.997,
against the old scorer's 0.850 and 0.933. On batch 2 (30 answers written after the method's
versions were compared on batch 1), accuracy is 0.933 and AUROC 0.987, against the old
scorer's 0.867 and 0.956. Any threshold from 0.40 to 0.50 gives the best accuracy on the set.
``tests/data/scorers/test_spanish.py`` recomputes all of these. On all 2,400 published base-model
answers (``results/*/finetune/pre``: 400 of the Spanish study, 2,000 English or upper-case ones
of the other two) it disagrees with the old scorer at 0.5 on 3 ("Tokyo, Japan?", "Sonia
MOHANACOOPER", "MAY 2023"), all now below 0.5 and old just above.
On the 1,000 Spanish SFT source answers (``results/spanish/sft_completions.json``) it disagrees
on 10: 7 read by eye as right (Portuguese, Serbian, "<<The Egg>>", Spanish prose around an
English block), 2 wrong (the two below), 1 mixed.

Issue 27 added batch 3 (30 answers: English dense with Spanish proper nouns, English controls,
Spanish full of English technical terms) and the title rule; ``test_titles_in_an_english_frame``
prints the AUROC and accuracy before and after the rule on batch 3 and on the whole set.

Measured limits:
- **Short text in another Romance language with no listed function word** is judged by the
  en/es identifier alone and called Spanish: "Certo, ecco un esempio semplice." 0.997 and
  "Bien sûr, voici un exemple simple." 0.92 (the two errors on the set).
- **Answers of one or two words** rest mostly on the identifier. "En Buenos Aires." scores
  exactly 0.5 and "In Buenos Aires." 0.33. Names alone in capitals ("CANADA") score
  about 0.7, as before. A text with no function word that the identifier has no n-gram for
  ("OK", "No.", "PARIS") scores exactly 0.5: above the SFT filter's ``>= 0.5``, not above
  drift's share-above-half ``> 0.5``.
- **Spanish made only of words it shares with Portuguese, Italian or French** ("para",
  "que", "de", "la", "en", "un", "con", "está") has only the identifier's vote. Two stray
  function words of another language bring it down to 0.5 or below: a model's "goles of
  forma oficial", or a truncated last word that happens to be Portuguese ("ter").
- **English using ``y`` as a variable** (``x and y`` outside LaTeX math) gains Spanish
  evidence. The code-line rule is a heuristic (a code keyword at the start of the line, or
  two code marks) and misses code written like prose.
- **Code comments** are removed with the code: an answer that is all code scores 0.0 even
  when its comments are Spanish. A short Spanish line made mostly of code marks goes too
  ("¿Es ArcSinh[Cosh[41]] igual a 41?" 0.0; see :mod:`nnsight_inoc.data.scorers.prose`).
- **Spanish words spelled like another language's function word** that are not listed as
  homographs count against Spanish: a degenerate "nos une, nos une, ..." (French ``une``)
  scores 0.43.
- **Other languages** (Catalan, Galician, ...) have no word list. They score on the words
  they share with the lists and on the identifier.
"""

from __future__ import annotations

import re
from functools import lru_cache

from nnsight_inoc.data.scorers.caps import caps_score
from nnsight_inoc.data.scorers.prose import prose
from nnsight_inoc.data.scorers.spanish_words import ELISION_FRAGMENTS, OTHER, OTHER_ONLY, SPANISH, SPANISH_ONLY

# Spanish when score >= THRESHOLD, as the SFT filter's sft_min_score. Chosen on the validation set: accuracy is
# highest for any threshold in [0.40, 0.50], and 0.5 keeps the study's filter and share-above-half unchanged.
THRESHOLD = 0.5
LANGUAGES = ("en", "es")  # the identifier's choices, as in the old scorer: Romance neighbours are the word lists' job
IDENTIFIER_WEIGHT = 2.0  # the identifier's vote, counted in function words

_QUOTES = re.compile(r"\"[^\"\n]*\"|“[^”\n]*”|«[^»\n]*»|(?<!\w)'[^'\n]+'(?!\w)")
_WORD = re.compile(r"[^\W\d_]+")
_SENTENCE_GAP = re.compile(r"[.!?:;¿¡\n]")
_JOIN_GAP = re.compile(r"[ \t\-]+")
_APOSTROPHES = ("'", "\u2019", "\u02bc")
_MAX_JOINED = 2  # lower-case words between two names that still belong to the name
_MAX_TITLE = 8  # lower-case words after a name that can still be its title, in an English frame
_TITLE_FRAME_MARGIN = 2  # other-language minus Spanish function words, outside names and titles, for an English frame
_ANY_LIST = SPANISH | OTHER
# Lower-case words that join the parts of a name: "Plaza de España", "Día de los Muertos", "Pride and Prejudice".
_NAME_JOINERS = frozenset({
    "de", "del", "la", "las", "los", "el", "y", "e", "i", "of", "the", "and", "da", "do", "dos", "das", "di",
    "du", "des", "von", "van", "der", "den", "le", "al",
})


def counted_words(prose_text: str, titles: bool = True) -> list[str]:
    """Lower-cased tokens left after dropping quotations and names (step 2); with ``titles``, also the lower-case
    words of titles in an English frame (:func:`_titles`; ``titles=False`` is the scorer before issue 27)."""
    text = _QUOTES.sub(" | ", prose_text)
    matches = list(_WORD.finditer(text))
    words = [m.group() for m in matches]
    caps = caps_score(text)
    if caps is not None and caps > 0.5:
        return [w.lower() for w in words]
    gaps = [text[matches[i - 1].end() : m.start()] if i else "" for i, m in enumerate(matches)]
    capital = [w[0].isupper() for w in words]
    joined = [i > 0 and _JOIN_GAP.fullmatch(g) is not None for i, g in enumerate(gaps)]
    name = [c and i > 0 and _SENTENCE_GAP.search(gaps[i]) is None for i, c in enumerate(capital)]
    for i in range(1, len(words)):
        # Joiner words i..j-1 between a capitalised non-function word and a capitalised word, joined to both
        # by spaces or hyphens, belong to the name ("Plaza de España"); "In the Prado" keeps "the", and
        # "Mark Cuban vendió los Dallas Mavericks" keeps "vendió los" ("vendió" is no joiner).
        if not (capital[i - 1] and words[i - 1].lower() not in _ANY_LIST and not capital[i] and joined[i]):
            continue
        for j in range(i + 1, min(i + _MAX_JOINED, len(words) - 1) + 1):
            run = range(i, j)
            if capital[j] and joined[j] and all(joined[k] and words[k] in _NAME_JOINERS for k in run):
                name[i:j] = [True] * (j - i)
                break
    if titles:
        name = _titles(words, gaps, capital, name)
    after = gaps[1:] + [""]
    keep = []
    for i, w in enumerate(words):
        at_apostrophe = gaps[i].endswith(_APOSTROPHES)
        if at_apostrophe and i > 0 and name[i - 1]:
            continue  # the "s" of "America's" belongs to the name
        if w.lower() in ELISION_FRAGMENTS and not (at_apostrophe or after[i].startswith(_APOSTROPHES)):
            continue  # a lone "n" or "d" is a variable or an initial, not an elision
        if not name[i]:
            keep.append(w.lower())
    return keep


def _titles(words: list[str], gaps: list[str], capital: list[bool], name: list[bool]) -> list[bool]:
    """``name`` with the lower-case tails of titles marked too, when the frame is not Spanish.

    A title is a name followed by lower-case words joined by spaces or hyphens ("Cien años de soledad",
    "El laberinto del fauno"), up to punctuation, a capitalised word, an other-language function word or
    :data:`_MAX_TITLE` words. Read as a title only when, outside every such tail and every name, the text has
    at least :data:`_TITLE_FRAME_MARGIN` more other-language function words than Spanish ones (an English frame;
    one stray word such as Portuguese ``mas`` for Spanish "más" is not a frame): in Spanish prose the words after
    a name are the sentence ("Mark Cuban vendió los Dallas Mavericks"), and they stay.
    """
    tail = [False] * len(words)
    for i in range(1, len(words)):
        if not name[i - 1] or tail[i - 1]:
            continue
        j = i
        while (j < len(words) and j - i < _MAX_TITLE and not capital[j] and _JOIN_GAP.fullmatch(gaps[j])
               and words[j].lower() not in OTHER_ONLY):
            tail[j] = True
            j += 1
    frame = [w.lower() for w, n, t in zip(words, name, tail) if not n and not t]
    if sum(w in OTHER_ONLY for w in frame) < sum(w in SPANISH_ONLY for w in frame) + _TITLE_FRAME_MARGIN:
        return name
    return [n or t for n, t in zip(name, tail)]


def function_word_counts(text: str) -> tuple[int, int]:
    """(n_es, n_other) for one text, after steps 1 and 2."""
    words = counted_words(prose(text))
    return sum(w in SPANISH_ONLY for w in words), sum(w in OTHER_ONLY for w in words)


@lru_cache(maxsize=1)
def _identifier():  # loaded once (about 0.5 s), not at import time
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(LANGUAGES))
    return ident


def identifier_p_es(text: str) -> float:
    """py3langid's P(es) among :data:`LANGUAGES` (``rank`` gives every allowed language's probability)."""
    return float(dict(_identifier().rank(text))["es"])


def spanish_score(text: str, titles: bool = True) -> float | None:
    """P(Spanish) in [0, 1] by the method of the module docstring.

    None when ``text`` has no letters; 0.0 when its only letters are in code.
    """
    if not any(c.isalpha() for c in text):
        return None
    body = prose(text)
    if not any(c.isalpha() for c in body):
        return 0.0
    words = counted_words(body, titles)
    n_es = sum(w in SPANISH_ONLY for w in words)
    n_other = sum(w in OTHER_ONLY for w in words)
    # The identifier reads the words that were counted (no names, no quotations); an answer that is all
    # quotation has none, and is judged on its prose.
    p = identifier_p_es(" ".join(words) if words else body.lower())
    return (n_es + IDENTIFIER_WEIGHT * p) / (n_es + n_other + IDENTIFIER_WEIGHT)


__all__ = ["IDENTIFIER_WEIGHT", "LANGUAGES", "THRESHOLD", "counted_words", "function_word_counts", "identifier_p_es",
           "spanish_score"]
