"""PII detection: personal data and secrets in a text, each candidate checked beyond its shape.

``find_pii(text)`` returns ``Finding(check="pii", ...)`` spans of the original string, sorted by start
and never overlapping: where candidates overlap the longest wins and, at equal length, the more
specific detector (the order below: secrets first, phones last). ``rule`` names the detector, never
the value. Cheap precompiled regexes find candidates; only candidates get validated. phonenumbers
checks at most ``PHONE_CHECKS_PER_TEXT`` candidates per text (results cached); past that a ``+``
candidate's shape decides (8-15 digits after a calling code that exists), so decoys stay cheap.

* ``email``: ``local@domain.tld`` in ASCII (``pii:email``). Adjacent CJK text is not swallowed.
* ``phone``: a ``+`` or ``00`` and a country code (``+44 20 7946 0958``, ``+1 (415) 555-2671``,
  ``0044 …``, ``+86 138 1234 5678``), validated with ``phonenumbers``; trailing digit groups that make
  it invalid are dropped (``pii:phone:intl``). North American ``(415) 555-2671``, ``415-555-2671``,
  validated the same way (``pii:phone:nanp``). Chinese mobiles ``13812345678``, ``138-1234-5678``
  (``pii:phone:cn_mobile``) and landlines ``010-12345678``, ``0755-1234567``, ``(0755) 1234567``:
  a real area-code shape and a separator (``pii:phone:cn_landline``). Other unprefixed numbers are
  not phones, so order numbers, dates, times, prices and bare digit runs are left alone.
* ``card``: 13-19 digits, spaces or dashes between them, starting 2-6 (the card networks' ranges)
  and passing the Luhn check (``pii:card:luhn``).
* ``iban``: a country code, the IBAN length registered for it and the ISO 13616 mod-97 check; single
  spaces between characters (groups of 4) allowed, either case (``pii:iban:mod97``).
* ``cn_id``: 18-character Chinese resident ID (last may be ``X``): a province code, a real birth date
  from 1900 to today and the ISO 7064 MOD 11-2 check character (``pii:cn_id:mod11``).
* ``ip``: IPv4 and IPv6 addresses accepted by :mod:`ipaddress` (``pii:ip:v4``, ``pii:ip:v6``; an IPv6
  needs a digit, so ``std::`` or ``ab::cd`` are not addresses). A dotted quad such as ``1.2.3.4`` IS
  an address, except right after a version cue (``version``, ``ver.``, ``v``, ``build``, ``release``,
  ``firmware``, ``版本``) or glued to letters (``v1.2.3.4``): then it is a version number.
* ``secret``: well-known tokens (``pii:secret:NAME``): OpenAI-style ``sk-…``/``sk-proj-…``, Stripe
  ``sk_live_…``, GitHub ``ghp_…``/``github_pat_…``, Slack ``xox[baprs]-…``, AWS ``AKIA…``/``ASIA…``,
  Google ``AIza…``, GitLab ``glpat-…``, JWTs ``eyJ….eyJ….…`` and PEM private key blocks (to the end
  of the text if the END line is missing); ``Bearer <token>`` (``pii:secret:bearer``); and the value
  of ``password: …``, ``api_key=…``, ``"token": "…"``, ``DB_PASSWORD=…``, ``密码:…`` assignments
  (``pii:secret:assignment``; a full-width colon counts too). Password-like keys need a value of 4+
  printable ASCII characters; token-like keys (secret, token, key) 8+ with a digit. Placeholders
  (``[SECRET_1]``), templates (``<password>``, ``${X}``) and fillers (``****``) are not values.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date

import phonenumbers
import regex

from safety.findings import Finding
from safety.pii_vault import PiiVault, PlaceholderStream

__all__ = ["PiiVault", "PlaceholderStream", "find_pii", "pending_start"]

Hit = tuple[int, int, str]  # start, end, rule

#: phonenumbers validations one ``find_pii`` call may make (each 20-50 µs once its country's metadata is
#: loaded); past them a candidate's shape decides, so a text full of decoys stays fast.
PHONE_CHECKS_PER_TEXT = 16
#: A candidate ending this close to the end of a text may still change as text follows: the patterns'
#: lookaheads read up to two characters past a match.
_LOOKAHEAD = 3


@dataclass
class _Scan:
    """What one ``find_pii`` call has left to spend."""

    phone_checks_left: int = PHONE_CHECKS_PER_TEXT

    def valid_phone(self, number: str, region: str | None) -> bool | None:
        """phonenumbers' verdict on ``number``, or None once the budget is spent."""
        if self.phone_checks_left <= 0:
            return None
        self.phone_checks_left -= 1
        return _valid_phone(number, region)


Validator = Callable[[re.Match[str], _Scan], Hit | None]


@dataclass(frozen=True)
class _Detector:
    category: str
    pattern: re.Pattern[str]
    validate: Validator
    hint: str = ""  # a substring every match contains: the regex is skipped when it is missing


def find_pii(text: str) -> list[Finding]:
    """PII in ``text``, sorted by start, non-overlapping (longest, then most specific, wins)."""
    ranked: list[tuple[int, int, int, Finding]] = []
    scan = _Scan()
    for priority, detector in enumerate(_DETECTORS):
        if detector.hint and detector.hint not in text:
            continue
        for start, end, rule in _hits(detector, text, scan):
            ranked.append((start - end, priority, start, Finding("pii", detector.category, rule, start, end)))
    kept: list[Finding] = []
    for *_, finding in sorted(ranked, key=lambda r: r[:3]):
        if all(finding.end <= k.start or finding.start >= k.end for k in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


def pending_start(text: str) -> int:
    """Where PII could still begin once more text follows ``text``; ``len(text)`` if nowhere.

    For a streaming filter: a candidate pattern that matches, or could match if the text went on, up
    to (about) its end may still grow into PII or become valid (``+44 20`` + ``7946 0958``). Partial
    matching is the ``regex`` module's; every start position is tried, as ``find_pii`` does.
    """
    near_end = len(text) - _LOOKAHEAD
    starts = (
        match.start()
        for pattern in _partial_patterns()
        # concurrent: the regex module lets go of the GIL meanwhile (the model's thread needs it too)
        for match in pattern.finditer(text, partial=True, overlapped=True, concurrent=True)
        if match.end() >= near_end
    )
    return min(starts, default=len(text))


@functools.cache
def _partial_patterns() -> tuple[regex.Pattern[str], ...]:
    return tuple(regex.compile(d.pattern.pattern, d.pattern.flags) for d in _DETECTORS)


def _hits(detector: _Detector, text: str, scan: _Scan) -> Iterator[Hit]:
    """Validated candidates. The scan goes on from a hit's end, or just after a rejected candidate's
    start: a candidate cut short (an IBAN) or rejected may hide the next one (``DE89… 01 GB82…``)."""
    position = 0
    while match := detector.pattern.search(text, position):
        hit = detector.validate(match, scan)
        if hit:
            yield hit
        position = hit[1] if hit else match.start() + 1


def _accept(rule: str) -> Validator:
    return lambda match, _scan: (match.start(), match.end(), rule)


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


# --- checksums ------------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """The Luhn check of a digit string: every second digit from the right doubled, sum ends in 0."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_ok(compact: str) -> bool:
    """ISO 13616: country and check digits moved to the end, letters as 10-35, the number mod 97 is 1."""
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


_CN_ID_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]


def cn_id_check_char(body: str) -> str:
    """ISO 7064 MOD 11-2 check character of the first 17 digits of a Chinese resident ID."""
    return "10X98765432"[sum(int(c) * w for c, w in zip(body, _CN_ID_WEIGHTS, strict=True)) % 11]


# --- validators -----------------------------------------------------------------------------------


def _card(match: re.Match[str], _scan: _Scan) -> Hit | None:
    digits = _digits(match.group())
    if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
        return match.start(), match.end(), "pii:card:luhn"
    return None


# Total IBAN length -> countries (SWIFT IBAN registry).
_IBAN_COUNTRIES = {
    15: "NO",
    16: "BE",
    18: "DK FI FK FO GL NL SD",
    19: "MK SI",
    20: "AT BA EE KZ LT LU MN XK",
    21: "CH HR LI LV",
    22: "BG BH CR DE GB GE IE ME RS VA",
    23: "AE GI IL IQ OM SO TL",
    24: "AD CZ ES MD PK RO SA SE SK TN VG",
    25: "LY PT ST",
    26: "IS TR",
    27: "BI DJ FR GR IT MC MR SM",
    28: "AL AZ BY CY DO GT HN HU LB NI PL SV",
    29: "BR EG PS QA UA",
    30: "JO KW MU YE",
    31: "MT SC",
    32: "LC",
    33: "RU",
}
_IBAN_LENGTHS = {country: length for length, names in _IBAN_COUNTRIES.items() for country in names.split()}


def _iban(match: re.Match[str], _scan: _Scan) -> Hit | None:
    """The candidate is cut to its country's length; what follows must not continue the last group."""
    length = _IBAN_LENGTHS.get(match.group()[:2].upper())
    alnum = [i for i, char in enumerate(match.group()) if char != " "]
    if length is None or len(alnum) < length:
        return None
    end = match.start() + alnum[length - 1] + 1
    compact = "".join(match.group()[i] for i in alnum[:length]).upper()
    if end < len(match.string) and match.string[end].isascii() and match.string[end].isalnum():
        return None
    return (match.start(), end, "pii:iban:mod97") if iban_ok(compact) else None


_CN_PROVINCES = frozenset(
    str(code)
    for code in (
        *(11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46),
        *(50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83),
    )
)


def _cn_id(match: re.Match[str], _scan: _Scan) -> Hit | None:
    compact = match.group().replace(" ", "").replace("-", "").upper()
    try:
        born = date(int(compact[6:10]), int(compact[10:12]), int(compact[12:14]))
    except ValueError:
        return None
    plausible = compact[:2] in _CN_PROVINCES and date(1900, 1, 1) <= born <= date.today()
    if plausible and cn_id_check_char(compact[:17]) == compact[17]:
        return match.start(), match.end(), "pii:cn_id:mod11"
    return None


def _email(match: re.Match[str], _scan: _Scan) -> Hit | None:
    start = match.start() + len(match.group()) - len(match.group().lstrip("."))
    local = match.string[start : match.string.index("@", start)]
    return (start, match.end(), "pii:email") if 0 < len(local) <= 64 else None


_VERSION_CUE = re.compile(r"(?:\b(?:version|ver|v|build|release|firmware|fw)\.?|版本)[\s:\uff1a#]*\Z", re.I)


def _ipv4(match: re.Match[str], _scan: _Scan) -> Hit | None:
    if _VERSION_CUE.search(match.string, max(0, match.start() - 16), match.start()):
        return None
    try:
        ipaddress.IPv4Address(match.group())
    except ValueError:
        return None
    return match.start(), match.end(), "pii:ip:v4"


def _ipv6(match: re.Match[str], _scan: _Scan) -> Hit | None:
    if not any(char.isdigit() for char in match.group()):
        return None
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return None
    return match.start(), match.end(), "pii:ip:v6"


@functools.lru_cache(maxsize=1024)
def _valid_phone(number: str, region: str | None) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number, region))
    except phonenumbers.NumberParseException:
        return False


_GROUP_END = re.compile(r"[0-9)](?=[ .\-])")
_MAX_PHONE_TRIES = 3


def _e164_shape(number: str) -> bool:
    """8-15 digits after a country calling code that exists: the verdict once the budget is spent."""
    digits = _digits(number)
    known = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
    return 8 <= len(digits) <= 15 and any(int(digits[:n]) in known for n in (1, 2, 3))


def _phone_intl(match: re.Match[str], scan: _Scan) -> Hit | None:
    """The longest valid prefix ending on a digit group: ``+44 20 7946 0958 2024`` keeps the phone."""
    text = match.group()
    ends = [m.end() for m in _GROUP_END.finditer(text)] + [len(text)]
    tries = 0
    for end in reversed(ends):
        number = "+" + text[2:end] if text.startswith("00") else text[:end]
        if not 7 <= len(_digits(number)) <= 16:  # E.164: at most 15, one more for a "(0)"
            continue
        verdict = scan.valid_phone(number, None)
        if verdict or (verdict is None and _e164_shape(number)):
            return match.start(), match.start() + end, "pii:phone:intl"
        tries += 1
        if tries == _MAX_PHONE_TRIES:
            break
    return None


def _phone_nanp(match: re.Match[str], scan: _Scan) -> Hit | None:
    return (*match.span(), "pii:phone:nanp") if scan.valid_phone(match.group(), "US") is not False else None


_AREA_CODE = re.compile(r"\(?(0[0-9]+)")


def _cn_landline(match: re.Match[str], _scan: _Scan) -> Hit | None:
    """Area codes: 010 and 02X (3 digits), or 0 + 3-9 + two digits; never 4 digits starting 01 or 02."""
    area = _AREA_CODE.match(match.group())
    code = area.group(1) if area else ""
    if (
        code == "010"
        or (len(code) == 3 and code.startswith("02"))
        or (len(code) == 4 and code[1] in "3456789")
    ):
        return match.start(), match.end(), "pii:phone:cn_landline"
    return None


# Not a value: a placeholder or template ([SECRET_1], <password>, {pw}, ${KEY}, $API_KEY, %s), a filler
# (****, xxxx) or a stand-in word.
_NOT_A_VALUE = re.compile(
    r"[\[<{].*|\$[{(A-Z_].*|%[a-z]?|(.)\1*|(?i:null|none|nil|true|false|undefined|redacted|hidden|masked)"
)


def _assignment(match: re.Match[str], _scan: _Scan) -> Hit | None:
    value = match.group("value")
    start = match.start("value")
    if value[0] in "\"'":
        value, start = value[1:-1], start + 1
    else:
        value = value.rstrip(".)")
    if _NOT_A_VALUE.fullmatch(value) or len(value) < 4:
        return None
    if match.group("token") and (len(value) < 8 or not any(char.isdigit() for char in value)):
        return None
    return start, start + len(value), "pii:secret:assignment"


def _secret_token(match: re.Match[str], _scan: _Scan) -> Hit | None:
    end = match.start() + len(match.group().rstrip())
    return match.start(), end, f"pii:secret:{match.lastgroup}"


def _bearer(match: re.Match[str], _scan: _Scan) -> Hit | None:
    return match.start("value"), match.end("value"), "pii:secret:bearer"


# --- candidate patterns ---------------------------------------------------------------------------

_TOKEN_CHARS = r"[A-Za-z0-9_\-]"
_SECRET_TOKENS = re.compile(
    rf"""(?<![A-Za-z0-9_\-.])(?:
      (?P<stripe>(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{{16,}})
    | (?P<openai>sk-{_TOKEN_CHARS}{{20,}})
    | (?P<github>gh[pousr]_[A-Za-z0-9]{{30,}}|github_pat_[A-Za-z0-9_]{{30,}})
    | (?P<slack>xox[baprs]-[A-Za-z0-9\-]{{10,}})
    | (?P<aws>(?:AKIA|ASIA)[0-9A-Z]{{16}})
    | (?P<google>AIza{_TOKEN_CHARS}{{35}})
    | (?P<gitlab>glpat-{_TOKEN_CHARS}{{20,}})
    | (?P<jwt>eyJ{_TOKEN_CHARS}{{8,}}\.eyJ{_TOKEN_CHARS}{{8,}}\.{_TOKEN_CHARS}*)
    | (?P<pem>-----BEGIN\ (?:[A-Z0-9]+\ )*PRIVATE\ KEY-----
        (?:.*?-----END\ (?:[A-Z0-9]+\ )*PRIVATE\ KEY-----|[A-Za-z0-9+/=\s]*))
    )(?![A-Za-z0-9_\-])""",
    re.X | re.S,
)
_PASSWORD_KEYS = r"password|passwd|passcode|passphrase|pwd|pin|密码|口令"
_TOKEN_KEYS = r"secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|auth[_\-]?key|credentials?"
_VALUE_CHAR = r"[!#-&(-+\--:<-~]"  # printable ASCII but quotes, comma and semicolon: ends at CJK text
_ASSIGNMENT = re.compile(
    rf"""(?<![A-Za-z0-9])(?i:(?P<password>{_PASSWORD_KEYS})|(?P<token>{_TOKEN_KEYS}))
    ["']?[ \t]*(?:=>|[:=\uff1a]|是|为)[ \t]*
    (?P<value>"[^"\r\n]{{1,200}}"|'[^'\r\n]{{1,200}}'|{_VALUE_CHAR}{{1,200}})""",
    re.X,
)
_BEARER = re.compile(r"(?<![A-Za-z0-9])(?i:bearer)[ \t]+(?P<value>[A-Za-z0-9._~+/\-]{16,}=*)")
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]++@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
)
_CN_ID = re.compile(
    r"(?<![A-Za-z0-9])[1-9][0-9]{5}[ \-]?(?:19|20)[0-9]{6}[ \-]?[0-9]{3}[0-9Xx](?![A-Za-z0-9])"
)
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,34}")
_CARD = re.compile(r"(?<![0-9])(?<![0-9][ \-])[0-9](?:[ \-]?[0-9]){12,18}(?![ \-]?[0-9])")
_IPV4 = re.compile(r"(?<![A-Za-z0-9_.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![A-Za-z0-9_]|\.[0-9])")
_IPV6 = re.compile(
    r"(?<![A-Za-z0-9_:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?"
    r"(?![A-Za-z0-9_:]|\.[0-9])"
)
# Not glued to an id, an amount or another number (A13812345678, 1,299.00, #0755-1234567).
_NOT_GLUED = r"(?<![A-Za-z0-9_+.,#\-])"
_PHONE_INTL = re.compile(_NOT_GLUED + r"(?:\+|00)[1-9][0-9]*+(?:[ .\-]?\(?[0-9]++\)?)*+")
_PHONE_NANP = re.compile(
    _NOT_GLUED
    + r"(?:1[ .\-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}(?![0-9])"
)
_CN_MOBILE = re.compile(_NOT_GLUED + r"1[3-9][0-9](?:[0-9]{8}|([ \-])[0-9]{4}\1[0-9]{4})(?![0-9])")
_CN_LANDLINE = re.compile(
    _NOT_GLUED + r"(?:\(0[1-9][0-9]{1,2}\) ?|0[1-9][0-9]{1,2}[ \-])[1-9][0-9]{6,7}(?![0-9])"
)

# Most specific first: at equal length the earlier detector wins.
_DETECTORS = (
    _Detector("secret", _SECRET_TOKENS, _secret_token),
    _Detector("secret", _BEARER, _bearer),
    _Detector("secret", _ASSIGNMENT, _assignment),
    _Detector("cn_id", _CN_ID, _cn_id),
    _Detector("iban", _IBAN, _iban),
    _Detector("card", _CARD, _card),
    _Detector("email", _EMAIL, _email, hint="@"),
    _Detector("ip", _IPV4, _ipv4, hint="."),
    _Detector("ip", _IPV6, _ipv6, hint=":"),
    _Detector("phone", _PHONE_INTL, _phone_intl),
    _Detector("phone", _PHONE_NANP, _phone_nanp),
    _Detector("phone", _CN_MOBILE, _accept("pii:phone:cn_mobile")),
    _Detector("phone", _CN_LANDLINE, _cn_landline),
)
