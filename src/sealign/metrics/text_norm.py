"""English text normalization for ASR scoring, and word/character error rates by edit distance.

:func:`normalize_text` is applied to reference and hypothesis alike, so it only has to be
consistent, not linguistically perfect. It lower-cases, strips accents and punctuation (keeping
word-internal apostrophes), and spells out numbers: cardinals (``42`` → ``forty two``), numbers with
thousands separators (``1,500`` → ``one thousand five hundred``), bare four-digit years
(``1984`` → ``nineteen eighty four``, ``2005`` → ``two thousand five``), decades (``1990s``),
ordinals (``21st`` → ``twenty first``), decimals (``3.5`` → ``three point five``), clock times
(``7:05`` → ``seven oh five``), percentages and ``$``/``£``/``€`` amounts; ``Mr``/``Mrs``/``Dr`` are
expanded, as are unambiguous contractions (``don't`` → ``do not``, ``it's`` → ``it is``,
``we'll`` → ``we will``; not ``'d``, nor a possessive ``'s``), and a few frequent British or
variant spellings (``colour``, ``centre``, ``ok``...) are mapped to American ones.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

NORMALIZER_VERSION = "2"

_ONES = [
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"),
    *("eighteen", "nineteen"),
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_CURRENCY = {
    "$": (("dollar", "dollars"), ("cent", "cents")),
    "£": (("pound", "pounds"), ("penny", "pence")),
    "€": (("euro", "euros"), ("cent", "cents")),
}
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}
# A few frequent British or variant spellings (a word, or a word plus plural "s"), mapped to
# American ones.
_SPELLINGS = {
    "colour": "color", "favourite": "favorite", "flavour": "flavor", "harbour": "harbor",
    "honour": "honor", "humour": "humor", "labour": "labor", "neighbour": "neighbor",
    "rumour": "rumor", "behaviour": "behavior", "centre": "center", "theatre": "theater",
    "metre": "meter", "litre": "liter", "fibre": "fiber", "organise": "organize",
    "organised": "organized", "realise": "realize", "realised": "realized",
    "recognise": "recognize", "recognised": "recognized", "apologise": "apologize",
    "analyse": "analyze", "travelled": "traveled", "travelling": "traveling",
    "cancelled": "canceled", "grey": "gray", "programme": "program", "defence": "defense",
    "catalogue": "catalog", "dialogue": "dialog", "jewellery": "jewelry",
    "aluminium": "aluminum", "tyre": "tire", "ok": "okay",
}  # fmt: skip
_CONTRACTIONS = [
    (re.compile(r"\bwon't\b"), "will not"), (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bshan't\b"), "shall not"), (re.compile(r"\bain't\b"), "is not"),
    (re.compile(r"\blet's\b"), "let us"), (re.compile(r"n't\b"), " not"),
    (re.compile(r"'re\b"), " are"), (re.compile(r"'m\b"), " am"),
    (re.compile(r"'ll\b"), " will"), (re.compile(r"'ve\b"), " have"),
    (re.compile(r"\b(it|that|what|there|here|he|she|where|who|how)'s\b"), r"\1 is"),
]  # fmt: skip


def number_to_words(n: int) -> str:
    """Cardinal number in words, without "and": ``1205`` → ``one thousand two hundred five``."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for scale, word in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            tail = "" if rest == 0 else " " + number_to_words(rest)
            return number_to_words(high) + " " + word + tail
    raise AssertionError("unreachable")


def year_to_words(n: int) -> str:
    """A year read the usual way: ``1984`` → ``nineteen eighty four``, ``1905`` → ``nineteen oh
    five``, ``1900`` → ``nineteen hundred``, ``2007`` → ``two thousand seven``."""
    if 2000 <= n <= 2009 or n < 1000 or n > 9999:
        return number_to_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return number_to_words(high) + " hundred"
    return number_to_words(high) + " " + (f"oh {_ONES[low]}" if low < 10 else number_to_words(low))


def ordinal_words(cardinal: str) -> str:
    """Turn the last word of a cardinal into its ordinal: ``twenty one`` → ``twenty first``."""
    head, _, last = cardinal.rpartition(" ")
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}" if head else last


def _plural(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}" if head else last


def _digits(s: str) -> str:
    """A digit string that is not a plain number (leading zero): read digit by digit."""
    return " ".join(_ONES[int(c)] for c in s)


def _integer(s: str, year_style: bool = True) -> str:
    if len(s) > 1 and s.startswith("0"):
        return _digits(s)
    n = int(s)
    if year_style and len(s) == 4 and (1100 <= n <= 1999 or 2000 <= n <= 2099):
        return year_to_words(n)
    return number_to_words(n)


def _amount(m: re.Match[str]) -> str:
    (unit, units), (sub, subs) = _CURRENCY[m.group(1)]
    whole = int((m.group(2) or "0").replace(",", ""))
    fraction = m.group(3) or m.group(4)
    cents = int((fraction + "0")[:2]) if fraction else 0
    parts = (
        [f"{number_to_words(whole)} {unit if whole == 1 else units}"] if whole or not cents else []
    )
    if cents:
        parts.append(f"{number_to_words(cents)} {sub if cents == 1 else subs}")
    return f" {' '.join(parts)} "


def _time(m: re.Match[str]) -> str:
    h, mm = int(m.group(1)), int(m.group(2))
    if mm == 0:
        return f" {number_to_words(h)} o'clock "
    minutes = f"oh {_ONES[mm]}" if mm < 10 else number_to_words(mm)
    return f" {number_to_words(h)} {minutes} "


_RULES: list[tuple[re.Pattern[str], object]] = [
    (re.compile(r"([$£€])\s?(?:(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?|\.(\d+))"), _amount),
    (re.compile(r"(\d)\s*([ap])\.?\s?m\b\.?"), lambda m: f"{m.group(1)} {m.group(2)}m "),
    (re.compile(r"\b(\d{1,2}):(\d{2})\b"), _time),
    (
        re.compile(r"\b(\d{1,3}(?:,\d{3})+|\d+)(?:st|nd|rd|th)\b"),
        lambda m: f" {ordinal_words(_integer(m.group(1).replace(',', ''), False))} ",
    ),
    (re.compile(r"\b(\d+)'?s\b"), lambda m: f" {_plural(_integer(m.group(1)))} "),
    (
        re.compile(r"\b(\d+)\.(\d+)\b"),
        lambda m: f" {_integer(m.group(1), False)} point {_digits(m.group(2))} ",
    ),
    (
        re.compile(r"\b\d{1,3}(?:,\d{3})+\b"),
        lambda m: f" {number_to_words(int(m.group(0).replace(',', '')))} ",
    ),
    (re.compile(r"\d+"), lambda m: f" {_integer(m.group(0))} "),
]
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)")
_APOSTROPHE = re.compile(r"(?<![^\W\d_])'|'(?![^\W\d_])")


def normalize_text(text: str) -> str:
    """Normalize English text for WER/CER (see module docstring); returns space-separated words."""
    s = unicodedata.normalize("NFKC", text)
    s = s.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'").lower()
    s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
    s = _LETTER_DIGIT.sub(" ", s)
    s = s.replace("&", " and ").replace("%", " percent ")
    for pattern, repl in _CONTRACTIONS:
        s = pattern.sub(repl, s)
    for pattern, repl in _RULES:
        s = pattern.sub(repl, s)  # type: ignore[arg-type]
    s = re.sub(
        r"\b(" + "|".join(_ABBREVIATIONS) + r")\b\.?", lambda m: _ABBREVIATIONS[m.group(1)], s
    )
    s = "".join(
        c if c == "'" or not unicodedata.category(c).startswith(("P", "S")) else " " for c in s
    )
    s = _APOSTROPHE.sub(" ", s)
    return " ".join(_american(w) for w in s.split())


def _american(word: str) -> str:
    if word in _SPELLINGS:
        return _SPELLINGS[word]
    if word.endswith("s") and word[:-1] in _SPELLINGS:
        return _SPELLINGS[word[:-1]] + "s"
    return word


@dataclass(frozen=True)
class EditCounts:
    """Minimal edit-distance alignment of a hypothesis to a reference."""

    substitutions: int
    deletions: int
    insertions: int
    ref_len: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """``errors / ref_len``; with an empty reference, the number of insertions."""
        return self.errors / self.ref_len if self.ref_len else float(self.insertions)

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.ref_len + other.ref_len,
        )


def edit_alignment(ref: list[str], hyp: list[str]) -> list[tuple[str, int | None, int | None]]:
    """A minimal-cost Levenshtein alignment of token lists as ``(op, i, j)`` steps in order:
    ``"="`` (``ref[i] == hyp[j]``), ``"S"`` (substitution), ``"D"`` (``ref[i]`` deleted, ``j``
    None) or ``"I"`` (``hyp[j]`` inserted, ``i`` None).

    Among alignments of minimal cost, one with the fewest insertions+deletions is returned.
    """
    # cell: (cost, insertions + deletions); back: 0 diagonal, 1 up (deletion), 2 left (insertion)
    cost = [[(j, j) for j in range(len(hyp) + 1)]] + [[(0, 0)] * (len(hyp) + 1) for _ in ref]
    back = [[2] * (len(hyp) + 1) for _ in range(len(ref) + 1)]
    for i in range(1, len(ref) + 1):
        cost[i][0], back[i][0] = (i, i), 1
        for j in range(1, len(hyp) + 1):
            c, e = cost[i - 1][j - 1]
            options = (
                (c + (ref[i - 1] != hyp[j - 1]), e),
                (cost[i - 1][j][0] + 1, cost[i - 1][j][1] + 1),
                (cost[i][j - 1][0] + 1, cost[i][j - 1][1] + 1),
            )
            k = min(range(3), key=options.__getitem__)
            cost[i][j], back[i][j] = options[k], k
    steps: list[tuple[str, int | None, int | None]] = []
    i, j = len(ref), len(hyp)
    while i or j:
        k = back[i][j]
        if k == 0:
            i, j = i - 1, j - 1
            steps.append(("=" if ref[i] == hyp[j] else "S", i, j))
        elif k == 1:
            i -= 1
            steps.append(("D", i, None))
        else:
            j -= 1
            steps.append(("I", None, j))
    return steps[::-1]


def edit_counts(ref: list[str], hyp: list[str]) -> EditCounts:
    """Substitutions, deletions and insertions of :func:`edit_alignment`."""
    ops = [op for op, _, _ in edit_alignment(ref, hyp)]
    return EditCounts(ops.count("S"), ops.count("D"), ops.count("I"), len(ref))


def word_counts(ref: str, hyp: str, normalize: bool = True) -> EditCounts:
    """Word-level edit counts, after :func:`normalize_text` unless ``normalize`` is False."""
    if normalize:
        ref, hyp = normalize_text(ref), normalize_text(hyp)
    return edit_counts(ref.split(), hyp.split())


def char_counts(ref: str, hyp: str, normalize: bool = True) -> EditCounts:
    """Character-level edit counts; single spaces between words count as characters."""
    if normalize:
        ref, hyp = normalize_text(ref), normalize_text(hyp)
    else:
        ref, hyp = " ".join(ref.split()), " ".join(hyp.split())
    return edit_counts(list(ref), list(hyp))


def wer(ref: str, hyp: str, normalize: bool = True) -> float:
    """Word error rate of ``hyp`` against ``ref``."""
    return word_counts(ref, hyp, normalize).rate


def cer(ref: str, hyp: str, normalize: bool = True) -> float:
    """Character error rate of ``hyp`` against ``ref``."""
    return char_counts(ref, hyp, normalize).rate
