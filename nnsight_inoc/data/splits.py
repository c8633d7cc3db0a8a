"""Disjoint prompt splits (direction / SFT / eval) from pinned real prompt sets.

Why this shape: the study compares training gradients against a trait direction v(l),
so the prompts that build v(l), the prompts we fine-tune on and the prompts we evaluate
on must never overlap (by id or by text), and the eval split must come from different
*sources* than SFT so that eval measures trait spread, not memorised training prompts.
Everything is deterministic given ``cfg.seed`` and the pinned sources (see
:mod:`nnsight_inoc.sources`), and the exact result is fingerprinted by :meth:`Splits.sha256`.

Filters (applied in this order; each removed prompt is counted under the first filter
that removes it): ``empty``, ``too_long`` (> ``cfg.max_chars``), ``non_english``,
``sensitive:<category>`` (keyword lists below), ``trait_confound`` (the prompt itself
talks about letter case or about languages/translation, which would confound the ALL-CAPS
and the planned Spanish trait), ``duplicate`` (case- and whitespace-insensitive, across
all sources; the first source in :data:`SOURCES` order keeps the prompt).

Keyword syntax: a plain word also matches its plural (``-s``/``-es``); a trailing ``*``
matches any word continuing the stem (``kill*`` -> killer, killing; not skill); spaces or
hyphens inside a phrase match any run of spaces/hyphens. Matching is case-insensitive and
anchored at word boundaries. The lists are deliberately broad: losing a harmless prompt
costs little, keeping a sensitive one can derail a fine-tuned model or the eval.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nnsight_inoc.core.artifacts import write_text
from nnsight_inoc.core.config import DataConfig
from nnsight_inoc.core.layout import DATA_CARD, SPLITS
from nnsight_inoc.data.sources import SOURCES, SourceSpec, load_source

SENSITIVE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "violence_death": ("kill*", "murder*", "violen*", "assault*", "attack*", "torture*", "abuse*", "massacre*",
                 "genocide*", "terror*", "hostage*", "kidnap*", "war", "warfare", "shoot*", "stab",
                 "stabbed", "stabbing", "behead*", "fight*", "dead", "death*", "die", "died", "dying", "drown*", "funeral*",
                       "grief", "griev*", "mourn*", "condolence*", "military", "army", "armies", "soldier*",
                       "iraq", "afghanistan"),
    "sexual": ("sex*", "porn*", "nude*", "nudity", "naked", "erotic*", "rape*", "raping", "fetish*",
               "orgasm*", "prostitut*", "seduc*", "horny", "one night stand"),
    "self_harm": ("suicid*", "self harm*", "kill myself", "hurt myself", "cut myself", "anorexi*",
                  "bulimi*", "depress*"),
    "medical": ("medic*", "diagnos*", "symptom*", "disease*", "overdos*", "heart attack", "emergency",
                "emergencies", "ambulance*", "poison*", "cancer*", "tumor*", "tumour*", "surgery",
                "surgeon*", "pregnan*", "prescription*", "pill", "doctor", "hospital*", "infection*",
                "covid*", "pandemic*", "vaccin*", "blood pressure", "diabet*", "insulin", "injur*",
                "wound*", "bleed*", "blood", "first aid", "therap*", "illness*", "health*", "pain*", "virus*",
                "sick*"),
    "drugs": ("drug*", "cocaine", "heroin", "meth", "methamphetamine", "marijuana", "cannabis", "weed",
              "lsd", "opioid*", "opium", "fentanyl", "narcotic*", "alcohol*", "drunk*", "vape*", "vaping",
              "smok*", "tobacco", "cigar*", "nicotine", "gambl*", "casino*"),
    "weapons": ("weapon*", "gun", "gunfire", "firearm*", "rifle*", "pistol*", "shotgun*", "bomb*",
                "explosive*", "grenade*", "ammunition", "ammo", "missile*", "nuclear weapon*"),
    "politics_religion": ("politic*", "election*", "elector*", "vote", "voted", "voting", "voter*",
                          "democrat*", "republican*", "liberal*", "conservative*", "left wing", "right wing",
                          "abortion*", "immigra*", "trump", "biden", "obama", "putin", "xi jinping", "hitler",
                          "nazi*", "communis*", "capitalis*", "socialis*", "fascis*", "israel*", "palestin*",
                          "gaza", "hamas", "ukrain*", "russia*", "taliban", "president*", "prime minister*",
                          "senat*", "congress*", "parliament*", "government*", "religio*", "god", "goddess*",
                          "jesus", "christ", "christian*", "allah", "islam*", "muslim*", "jew", "jews",
                          "jewish", "judais*", "hindu*", "buddh*", "bible*", "quran", "koran", "church*",
                          "atheis*", "pope", "prophet*"),
    "other_sensitive": ("racis*", "racial*", "slave*", "hate", "hatred", "crime*", "criminal*", "illegal*",
                        "steal*", "stole", "stolen", "theft*", "fraud*", "scam*", "hack", "hacking",
                        "hacker*", "phishing", "malware", "prison*", "jail*", "police", "discriminat*",
                        "harass*", "bully*", "bullied", "lawsuit*", "offensive", "insult*", "idiot*", "stupid",
                        "damn*", "dammit", "fuck*", "shit*", "alex jones", "gay", "lesbian*", "lgbt*", "trans",
                        "transgender*", "gender*"),
}


TRAIT_CONFOUND_KEYWORDS: tuple[str, ...] = (
    # letter case (the ALL-CAPS trait)
    "caps", "all caps", "caps lock", "capslock", "capital letter", "block capital", "in capitals",
    "capitalize", "capitalise", "capitalized", "capitalised", "capitalizing", "capitalising",
    "capitalization", "capitalisation", "uppercase*", "upper case*", "lowercase*", "lower case*",
    "title case", "majuscule*", "shout*", "yell", "yelled", "yelling",
    # response language / translation (the planned Spanish trait)
    "translat*", "language*", "spanish", "español", "espanol", "french", "german", "italian",
    "portuguese", "chinese", "mandarin", "japanese", "korean", "arabic", "hindi", "dutch", "latin",
    "bilingual", "multilingual", "in english",
)


# English heuristic: letters must be (almost) all ASCII, and a prompt of 5+ words must
# contain at least one common English function word. Cheap, deterministic, and it
# catches the non-English Arena-Hard prompts and any Latin-script foreign prompt.
MIN_ASCII_LETTER_SHARE = 0.97
ENGLISH_STOPWORDS: frozenset[str] = frozenset(
    "the a an and of to is are was were be in on for with that this it its you your i my me we our "
    "what how why when where which who can could would should will do does did have has not from "
    "about as at by or if please write give".split()
)


SPLIT_FIELDS: tuple[str, ...] = ("n_direction", "direction_heldout_frac", "n_sft", "n_eval", "max_chars", "seed")
FILTER_ORDER: tuple[str, ...] = ("empty", "too_long", "non_english", "sensitive", "trait_confound", "duplicate")


class DataError(RuntimeError):
    """The prompt pool cannot satisfy the request, or stored splits are missing/corrupt."""


@dataclass(frozen=True)
class Prompt:
    id: str  # stable, e.g. "alpaca_eval:123"
    text: str
    source: str


@dataclass
class Splits:
    direction: list[Prompt]
    direction_heldout: list[Prompt]
    sft: list[Prompt]
    eval: list[Prompt]
    card: dict = field(default_factory=dict)

    def as_lists(self) -> dict[str, list[Prompt]]:
        return {"direction": self.direction, "direction_heldout": self.direction_heldout,
                "sft": self.sft, "eval": self.eval}

    def sha256(self) -> str:
        """Fingerprint of split membership and text (order included); the card is not hashed."""
        payload = {k: [[p.id, p.text, p.source] for p in v] for k, v in self.as_lists().items()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _keyword_regex(keywords: Iterable[str]) -> re.Pattern[str]:
    parts = []
    for kw in keywords:
        stem, prefix = (kw[:-1], True) if kw.endswith("*") else (kw, False)
        body = r"[\s\-]+".join(re.escape(w) for w in re.split(r"[\s\-]+", stem))
        parts.append(body + (r"\w*" if prefix else r"(?:s|es)?"))
    return re.compile(r"\b(?:" + "|".join(parts) + r")\b", re.IGNORECASE)


_SENSITIVE_RE = {cat: _keyword_regex(kws) for cat, kws in SENSITIVE_KEYWORDS.items()}
_CONFOUND_RE = _keyword_regex(TRAIT_CONFOUND_KEYWORDS)
_WORD_RE = re.compile(r"[A-Za-z']+")


def normalize_text(text: str) -> str:
    """NFC, drop format chars, unify line breaks (incl. U+2028/9), collapse spaces per line,
    at most one blank line.

    Newlines are kept because code and list prompts depend on them.
    """
    text = unicodedata.normalize("NFC", text)
    # Invisible format characters (BOM, zero-width space, soft hyphen) defeat dedup and length checks.
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = re.sub(r"\r\n?|[\u2028\u2029\x85]", "\n", text)
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def dedup_key(text: str) -> str:
    return " ".join(text.casefold().split())


def is_english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    if not letters or sum(c.isascii() for c in letters) / len(letters) < MIN_ASCII_LETTER_SHARE:
        return False
    words = [w.lower().strip("'") for w in _WORD_RE.findall(text)]
    return len(words) < 5 or any(w in ENGLISH_STOPWORDS for w in words)


def sensitive_category(text: str) -> str | None:
    return next((cat for cat, rx in _SENSITIVE_RE.items() if rx.search(text)), None)


def is_trait_confound(text: str) -> bool:
    return _CONFOUND_RE.search(text) is not None


def rejection_reason(text: str, max_chars: int) -> str | None:
    """First filter that rejects an already normalised prompt, or None (duplicates aside)."""
    if not text:
        return "empty"
    if len(text) > max_chars:
        return "too_long"
    if not is_english(text):
        return "non_english"
    cat = sensitive_category(text)
    if cat is not None:
        return f"sensitive:{cat}"
    if is_trait_confound(text):
        return "trait_confound"
    return None


def filter_prompts(raw: Sequence[Prompt], max_chars: int, seen: set[str] | None = None) -> tuple[list[Prompt], Counter[str]]:
    """Normalise and filter one source; ``seen`` carries dedup keys across sources."""
    seen = set() if seen is None else seen
    kept: list[Prompt] = []
    removed: Counter[str] = Counter()
    for p in raw:
        text = normalize_text(p.text)
        reason = rejection_reason(text, max_chars)
        if reason is None and dedup_key(text) in seen:
            reason = "duplicate"
        if reason is not None:
            removed[reason] += 1
            continue
        seen.add(dedup_key(text))
        kept.append(Prompt(p.id, text, p.source))
    return kept, removed


def _take(pool: list[Prompt], n: int, what: str, sources: Sequence[str], seed: int) -> tuple[list[Prompt], list[Prompt]]:
    if len(pool) < n:
        raise DataError(f"{what} split needs {n} prompts from sources {list(sources)} but only "
                        f"{len(pool)} are available after filtering; lower the size or add a source")
    pool = sorted(pool, key=lambda p: p.id)
    random.Random(f"{seed}:{what}").shuffle(pool)  # str seeds are hashed with sha512: stable across runs
    return pool[:n], pool[n:]


def assign_splits(pools: dict[str, list[Prompt]], roles: dict[str, str], cfg: DataConfig) -> dict[str, list[Prompt]]:
    """Eval from eval-role sources, SFT from sft-role sources, direction from all leftovers."""
    if not set(pools) <= set(roles):
        raise DataError(f"sources without a role: {sorted(set(pools) - set(roles))}")
    by_role = {r: [s for s in sorted(pools) if roles[s] == r] for r in ("eval", "sft", "direction")}
    for r in ("eval", "sft"):
        if not by_role[r]:
            raise DataError(f"no source has role {r!r}; roles given: {roles}")
    eval_, eval_rest = _take([p for s in by_role["eval"] for p in pools[s]], cfg.n_eval, "eval", by_role["eval"], cfg.seed)
    sft, sft_rest = _take([p for s in by_role["sft"] for p in pools[s]], cfg.n_sft, "sft", by_role["sft"], cfg.seed)
    rest = eval_rest + sft_rest + [p for s in by_role["direction"] for p in pools[s]]
    direction_all, _ = _take(rest, cfg.n_direction, "direction", sorted(pools), cfg.seed)
    n_held = round(cfg.n_direction * cfg.direction_heldout_frac)
    if not 1 <= n_held < cfg.n_direction:
        raise DataError(f"n_direction={cfg.n_direction} with direction_heldout_frac={cfg.direction_heldout_frac} "
                        f"leaves {n_held} held-out prompts; both parts need at least one")
    return {"direction": direction_all[n_held:], "direction_heldout": direction_all[:n_held],
            "sft": sft, "eval": eval_}


def build_splits(cfg: DataConfig, cache_dir: Path, sources: Sequence[SourceSpec] = SOURCES) -> Splits:
    """Fetch, verify, filter and split the pinned sources; the card records every count."""
    seen: set[str] = set()
    pools: dict[str, list[Prompt]] = {}
    source_cards = []
    for spec in sources:
        raw = [Prompt(f"{spec.name}:{lid}", text, spec.name) for lid, text in load_source(spec, Path(cache_dir) / "sources")]
        kept, removed = filter_prompts(raw, cfg.max_chars, seen)
        pools[spec.name] = kept
        source_cards.append({
            "name": spec.name, "package": spec.package, "version": spec.version, "wheel": spec.wheel,
            "wheel_sha256": spec.wheel_sha256, "files": [{"path": p, "sha256": h} for p, h in spec.files],
            "licence": spec.licence, "role": spec.role, "raw": len(raw), "removed": dict(sorted(removed.items())),
            "kept": len(kept),
        })
    parts = assign_splits(pools, {s.name: s.role for s in sources}, cfg)
    splits = Splits(**parts)
    splits.card = _card(cfg, source_cards, splits)
    return splits


def _card(cfg: DataConfig, source_cards: list[dict], splits: Splits) -> dict:
    return {
        # Only the fields that shape the splits: generation settings in DataConfig must not
        # make saved splits look stale.
        "seed": cfg.seed, "config": cfg.model_dump(include=set(SPLIT_FIELDS)), "sources": source_cards,
        "splits": {name: {"size": len(ps), "sources": dict(sorted(Counter(p.source for p in ps).items()))}
                   for name, ps in splits.as_lists().items()},
        "filters": {"order": list(FILTER_ORDER), "sensitive_keywords": {k: list(v) for k, v in SENSITIVE_KEYWORDS.items()},
                    "trait_confound_keywords": list(TRAIT_CONFOUND_KEYWORDS),
                    "english": {"min_ascii_letter_share": MIN_ASCII_LETTER_SHARE, "stopwords_needed_from_words": 5,
                                "stopwords": sorted(ENGLISH_STOPWORDS)}},
        "sha256": splits.sha256(),
    }


def _write_json(path: Path, obj: object) -> None:
    # indent=1 and raw UTF-8 (not core.artifacts.write_json's style): the published splits files keep their bytes.
    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def save_splits(splits: Splits, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    body = {"format": 1, "sha256": splits.sha256(),
            "splits": {k: [asdict(p) for p in v] for k, v in splits.as_lists().items()}}
    _write_json(folder / SPLITS, body)
    _write_json(folder / DATA_CARD, splits.card)


def load_splits(folder: Path) -> Splits:
    """Load saved splits and refuse them unless their content hash matches the stored one."""
    folder = Path(folder)
    paths = {n: folder / n for n in (SPLITS, DATA_CARD)}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"saved splits incomplete: missing {missing}; run the data step first")
    try:
        body = json.loads(paths[SPLITS].read_text(encoding="utf-8"))
        card = json.loads(paths[DATA_CARD].read_text(encoding="utf-8"))
        parts = {k: [Prompt(**p) for p in body["splits"][k]] for k in ("direction", "direction_heldout", "sft", "eval")}
        stored = body["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise DataError(f"{folder}: splits.json/data_card.json are corrupt ({type(err).__name__}: {err})") from None
    splits = Splits(**parts, card=card)
    if card.get("sha256") != stored:
        raise DataError(f"{paths[DATA_CARD]} describes splits {card.get('sha256')}, but splits.json "
                        f"holds {stored}; the two files come from different builds")
    if splits.sha256() != stored:
        raise DataError(f"{paths[SPLITS]}: content hash {splits.sha256()} does not match stored {stored}; "
                        "the file was edited or truncated")
    return splits
