"""Lexicon check: terms found through obfuscation, ordinary words left alone, spans that mask the word.

The data under test is a safety word list, so offensive words appear here on purpose; so do the
look-alike letters of other scripts, hence the file-wide exemption below.
"""

# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety.findings import Finding
from safety.lexicon import DEFAULT_LEXICON_FILE, Lexicon, expand
from safety.normalize import normalize

CATEGORIES = ("profanity", "hate", "sexual", "self_harm", "violence", "weapons", "extremism")


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon.load()


def found(lexicon: Lexicon, text: str) -> list[tuple[str, str]]:
    """(category, matched original text) of each finding."""
    return [(f.category, text[f.start : f.end]) for f in lexicon.find(text)]


def mask(text: str, findings: list[Finding]) -> str:
    for f in sorted(findings, key=lambda f: f.start, reverse=True):
        text = text[: f.start] + "*" * (f.end - f.start) + text[f.end :]
    return text


# --- the bundled data -----------------------------------------------------------------------------


def test_bundled_lexicon_has_every_category_in_both_languages(lexicon: Lexicon) -> None:
    assert lexicon.categories == CATEGORIES
    for category in CATEGORIES:
        for lang in ("en", "zh"):
            assert 30 <= lexicon.counts[f"{category}:{lang}"] <= 100, (category, lang)


def test_rules_are_ids_never_the_matched_text(lexicon: Lexicon) -> None:
    text = "fuck this, 傻逼, I will kill you, heil hitler, 出售枪支"
    findings = lexicon.find(text)
    assert len(findings) == 5
    for f in findings:
        assert f.check == "lexicon"
        assert f.score == 1.0
        assert re.fullmatch(rf"{f.category}:(en|zh):\d{{3}}", f.rule)
        assert text[f.start : f.end].casefold() not in f.rule


@pytest.mark.parametrize(
    ("text", "category", "matched"),
    [
        ("you are a fucking idiot", "profanity", "fucking"),
        ("get lost, you n1gg3r", "hate", "n1gg3r"),
        ("come on, send nudes", "sexual", "send nudes"),
        ("some days i want to kill myself", "self_harm", "kill myself"),
        ("I'm going to kill you", "violence", "I'm going to kill you"),
        ("tell me how to make a pipe bomb", "weapons", "how to make a pipe bomb"),
        ("heil hitler!", "extremism", "heil hitler"),
        ("你这个傻逼", "profanity", "傻逼"),
        ("支那人滚", "hate", "支那人"),
        ("今晚约炮吗", "sexual", "约炮"),
        ("我真的不想活了", "self_harm", "不想活了"),
        ("我要杀了你", "violence", "我要杀了你"),
        ("长期出售枪支", "weapons", "出售枪支"),
        ("我要加入伊斯兰国", "extremism", "加入伊斯兰国"),
    ],
)
def test_each_category_in_each_language(lexicon: Lexicon, text: str, category: str, matched: str) -> None:
    assert found(lexicon, text) == [(category, matched)]


# --- obfuscation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "word",
    [
        "fuck",
        "FUCK",
        "FuCk",
        "ｆｕｃｋ",  # fullwidth
        "𝐟𝐮𝐜𝐤",  # mathematical bold
        "ⓕⓤⓒⓚ",  # circled
        "fück",  # accent
        "f̶u̶c̶k̶",  # combining strike-through, the last mark included in the span
        "f\u200bu\u200cc\u200dk",  # zero-width space, non-joiner, joiner
        "f\u200eu\u200fck",  # direction marks
        "f\u2060u\u2061c\u2062k\u2063",  # word joiner, invisible operators (trailing one masked too)
        "f\u2064u\ufeffck",  # invisible plus, BOM
        "f\u00adu\u00adc\u00adk",  # soft hyphens
        "f\U000e0075u\U000e0063ck",  # Unicode tag characters
        "fu\U000e0001\U000e007fck",  # language tag and cancel tag
        "f\ufe0fu\ufe0ec\U000e0100k",  # variation selectors
        "fuсk",  # Cyrillic с
        "fυck",  # Greek υ
        "ƒuck",
        "f u c k",
        "f.u.c.k",
        "f-u-c-k",
        "f*u*c*k",
        "f_u_c_k",
        "f/u/c/k",
        "f!u!c!k",
        "f$u$c$k",
        "f|u|c|k",
        "f🙂u🙂c🙂k",
        "F.U.C.K",
        "f  u  c  k",
        "f\tu\tc\tk",
        "fuuuuck",
        "fuckkkk",
        "FUUUUCK",
    ],
)
def test_disguised_fuck_is_found_with_the_whole_word_as_span(lexicon: Lexicon, word: str) -> None:
    text = f"well {word} again"
    assert found(lexicon, text) == [("profanity", word)]


@pytest.mark.parametrize(
    ("word", "category"),
    [
        ("sh1t", "profanity"),
        ("$hit", "profanity"),
        ("5h1t", "profanity"),
        ("sh!t", "profanity"),
        ("shiiit", "profanity"),
        ("a$$", "profanity"),
        ("@ss", "profanity"),
        ("a55hole", "profanity"),
        ("4sshole", "profanity"),
        ("a s s", "profanity"),
        ("b1tch", "profanity"),
        ("bi7ch", "profanity"),
        ("c0cksucker", "profanity"),
        ("w4nker", "profanity"),
        ("ѕһіт", "profanity"),  # all Cyrillic
        ("ΒΙΤCΗ", "profanity"),  # Greek capitals
        ("nіggеr", "hate"),  # Cyrillic і and е
        ("f4ggot", "hate"),
        ("k!ke", "hate"),
        ("p0rn", "sexual"),
        ("s1ut", "profanity"),  # 1 read as l
        ("a55ho1e", "profanity"),
        ("b|tch", "profanity"),  # | read as i
        ("pr0n", None),  # not an entry: leet reads it, but "pron" is no word of the list
    ],
)
def test_leetspeak_and_homoglyphs(lexicon: Lexicon, word: str, category: str | None) -> None:
    text = f"you {word}!"
    assert found(lexicon, text) == ([(category, word)] if category else [])


def test_each_word_gets_its_own_reading_of_1(lexicon: Lexicon) -> None:
    text = "k1ll yourself, you s1ut"
    assert found(lexicon, text) == [("self_harm", "k1ll yourself"), ("profanity", "s1ut")]


def test_punctuation_after_a_word_is_not_leetspeak(lexicon: Lexicon) -> None:
    assert found(lexicon, "fuck!!! shit!") == [("profanity", "fuck"), ("profanity", "shit")]


def test_obfuscated_phrases(lexicon: Lexicon) -> None:
    assert found(lexicon, "I w1ll k1ll y0u") == [("violence", "I w1ll k1ll y0u")]
    assert found(lexicon, "i'll   KILL\u200b you") == [("violence", "i'll   KILL\u200b you")]
    assert found(lexicon, "ｋｉｌｌ ｙｏｕｒｓｅｌｆ") == [("self_harm", "ｋｉｌｌ ｙｏｕｒｓｅｌｆ")]
    assert found(lexicon, "#killyourself") == [("self_harm", "killyourself")]
    assert found(lexicon, "how to make a b0mb?") == [("weapons", "how to make a b0mb")]
    assert found(lexicon, "k y s") == [("self_harm", "k y s")]


def test_spelled_out_letters_inside_a_sentence(lexicon: Lexicon) -> None:
    assert found(lexicon, "what a f u c k i n g mess") == [("profanity", "f u c k i n g")]
    assert found(lexicon, "f u c k you") == [("profanity", "f u c k you")]


def test_masking_the_spans_leaves_nothing_to_find(lexicon: Lexicon) -> None:
    text = "ｆｕｃｋ y o u, f.u.c.k.i.n.g sh1t head, I w1ll k1ll y0u, \u200bа$$h0le, 傻 逼, 殺了你"
    findings = lexicon.find(text)
    assert {f.category for f in findings} == {"profanity", "violence"}
    masked = mask(text, findings)
    assert lexicon.find(masked) == []
    assert masked.endswith("*" * len("殺了你"))


# --- no false positives ---------------------------------------------------------------------------

ORDINARY_ENGLISH = [
    "class",
    "Scunthorpe",
    "assistant",
    "I was saying",
    "cocktail",
    "Dickens",
    "analysis",
    "therapist",
    "grape",
    "shitake",
    "shiitake mushrooms",
    "kill the process",
    "please kill the job and restart it",
    "shoot me an email",
    "I'll shoot you an email tomorrow",
    "my parcel got crushed",
    "Cockpit Pro",
    "Assassin's Creed",
    "Hancock",
    "assess the damage",
    "the bass was too loud",
    "passes and glasses",
    "Sussex and Essex",
    "Middlesex",
    "document",
    "cucumber",
    "cumulative",
    "niggle",
    "snigger",
    "Niger and Nigeria",
    "spicy food",
    "spick and span",
    "a chink in the armour",
    "my pussy cat",
    "blue tits at the feeder",
    "the Galaxy A55 phone",
    "model A55 and B55",
    "arsenal",
    "scrapbook",
    "manslaughter charges",
    "the hell",
    "shell",
    "hello",
    "title",
    "button",
    "Matsushita",
    "Penistone",
    "butterscotch",
    "skyscraper",
    "specialist",
    "cockatoo",
    "peacock",
    "s, b and c",
    "def f(s, b): return s.b",
    "a.m. and p.m., e.g. and i.e.",
    "usb cable",
    "classic bass",
    "woop woop",
    "this will kill your dog",
    "chocolate can kill your dog",
    "the heater could burn your house down",
    "go back to your country settings",
    "I cut myself on the broken glass",
    "take my life savings",
    "crack in the screen",
    "buy coke zero",
    "weed killer",
    "Summa cum laude diploma frame",
    "Moby Dick paperback",
    "Dick's Sporting Goods gift card",
    "My name is Cummings",
    "The hoe for my garden broke",
    "I'm dying to get this phone, the price is killing me",
    "The bomb cyclone delayed my parcel",
    "Do you sell hunting rifles and ammo boxes?",
]

ORDINARY_CHINESE = [
    "操作",
    "体操",
    "日本",
    "干净",
    "鸡蛋",
    "傻瓜相机",
    "我操作了一下",
    "我操心的是发货",
    "我草拟了一份合同",
    "其他妈妈都来了",
    "我想死你了",
    "跳楼价清仓",
    "不要道德绑架",
    "智障人士专用通道",
    "印度支那",
    "装上吊灯",
    "鸡肉棒很好吃",
    "草莓",
    "操场",
    "日本料理",
    "乾淨",
    "你好，请问我的快递到哪里了？",
    "杀毒软件",
    "露点温度",
    "网吧包夜",
    "打飞机游戏",
    "衣服上吊牌没剪，可以退吗？",
    "我戴上吊坠后皮肤过敏了",
    "这款面霜会不会伤害自己的皮肤？",
    "外国垃圾分类的做法",
    "小鸡巴士玩具",
    "优惠券无码怎么办",
    "这个杀毒软件怎么卸载",
]


@pytest.mark.parametrize("text", ORDINARY_ENGLISH)
def test_ordinary_english_is_left_alone(lexicon: Lexicon, text: str) -> None:
    assert lexicon.find(text) == []


@pytest.mark.parametrize("text", ORDINARY_CHINESE)
def test_ordinary_chinese_is_left_alone(lexicon: Lexicon, text: str) -> None:
    assert lexicon.find(text) == []


def test_an_allowlisted_phrase_only_shields_its_own_occurrence(lexicon: Lexicon) -> None:
    assert found(lexicon, "我操，我操作了一下") == [("profanity", "我操")]
    assert found(lexicon, "a chink in the armor, you chink") == [("hate", "chink")]


def test_stretched_letters_must_be_stretched_far(lexicon: Lexicon) -> None:
    # A doubled letter makes other words ("assess" is not "asses", "woop" is not "wop"); three is a stretch.
    assert found(lexicon, "as") == []
    assert found(lexicon, "ass") == [("profanity", "ass")]
    assert found(lexicon, "asssss") == [("profanity", "asssss")]
    assert found(lexicon, "assess") == []


# --- Chinese --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant", ["傻逼", "傻 逼", "傻*逼", "傻.逼", "傻，逼", "傻\u200b逼", "傻_逼", "傻😀逼", "傻 - 逼"]
)
def test_chinese_survives_separators_between_characters(lexicon: Lexicon, variant: str) -> None:
    text = f"你是{variant}吗"
    assert found(lexicon, text) == [("profanity", variant)]


def test_traditional_characters_fold_to_simplified(lexicon: Lexicon) -> None:
    assert found(lexicon, "我要殺了你") == [("violence", "我要殺了你")]
    assert found(lexicon, "出售槍支") == [("weapons", "出售槍支")]
    assert found(lexicon, "自殺方法") == [("self_harm", "自殺方法")]


def test_fullwidth_and_compatibility_forms_in_chinese(lexicon: Lexicon) -> None:
    assert found(lexicon, "买Ａ片") == [("sexual", "Ａ片")]
    assert found(lexicon, "傻Ｂ") == [("profanity", "傻Ｂ")]
    assert found(lexicon, "data片") == []  # a Latin letter inside a longer Latin word


@pytest.mark.parametrize("slang", ["sb", "SB", "nmsl", "cnm", "ＳＢ"])
def test_latin_chinese_slang_as_a_whole_word(lexicon: Lexicon, slang: str) -> None:
    assert found(lexicon, f"你是{slang}吗") == [("profanity", slang)]
    assert found(lexicon, f"you {slang}") == [("profanity", slang)]


@pytest.mark.parametrize("text", ["usb", "sbc board", "nmslx", "cnmd", "ssb"])
def test_latin_chinese_slang_not_inside_words(lexicon: Lexicon, text: str) -> None:
    assert lexicon.find(text) == []


# --- results --------------------------------------------------------------------------------------


def test_findings_are_sorted_and_one_category_never_overlaps(lexicon: Lexicon) -> None:
    text = "fuck you, go fuck yourself, kill yourself, how to make a pipe bomb, 我要杀了你全家 傻逼"
    findings = lexicon.find(text)
    assert [f.start for f in findings] == sorted(f.start for f in findings)
    for a in findings:
        for b in findings:
            if a is not b and a.category == b.category:
                assert a.end <= b.start or b.end <= a.start
    assert ("weapons", "how to make a pipe bomb") in found(lexicon, text)
    assert ("weapons", "pipe bomb") not in found(lexicon, text)


def test_empty_text(lexicon: Lexicon) -> None:
    assert lexicon.find("") == []


# --- custom lexicons ------------------------------------------------------------------------------


def test_load_a_custom_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        '[fold]\ntraditional = "貓猫 糧粮"\n[allow]\nen = ["grumpy cat food"]\n'
        '[en]\nspam = ["buy {now,today}", "", "cheap {pill,pills}"]\n[zh]\nspam = ["便宜猫粮"]\n',
        encoding="utf-8",
    )
    lexicon = Lexicon.load(path)
    assert lexicon.categories == ("spam",)
    assert dict(lexicon.counts) == {"spam:en": 2, "spam:zh": 1}
    text = "BUY N0W cheap pills 便宜貓糧"
    assert [(f.rule, text[f.start : f.end]) for f in lexicon.find(text)] == [
        ("spam:en:001", "BUY N0W"),
        ("spam:en:003", "cheap pills"),
        ("spam:zh:001", "便宜貓糧"),
    ]


@pytest.mark.parametrize("entry", ['"sh1t"', '"3d gun"', '"{a,{b,c}}"', '"fu}ck"', '"日本{"'])
def test_bad_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        Lexicon.from_toml(f"[en]\nprofanity = [{entry}]\n")


def test_brace_expansion() -> None:
    assert expand("fuck{,s} {you,u}") == ["fuck you", "fuck u", "fucks you", "fucks u"]
    assert expand("  i  will{, }kill ") == ["i willkill", "i will kill"]
    assert expand("a{,}") == ["a"]
    assert expand("") == []


# --- normalize ------------------------------------------------------------------------------------


def test_normalize_maps_every_character_back() -> None:
    text = "Ｆ\u200bﬁ Straße Ѕһіт"
    n = normalize(text)
    assert n.text == "ffi strasse shit"
    assert list(n.origin) == [0, 2, 2, 3, 4, 5, 6, 7, 8, 8, 9, 10, 11, 12, 13, 14]
    assert n.span(0, 1) == (0, 2)  # "f" came from "Ｆ"; the zero-width space after it goes with it
    assert n.span(1, 3) == (2, 3)  # "fi" came from "ﬁ"
    with pytest.raises(ValueError):
        n.span(3, 3)


def test_normalize_identity_fast_path() -> None:
    n = normalize("Hello, World")
    assert n.text == "hello, world"
    assert list(n.origin) == list(range(12))


def test_normalize_options() -> None:
    assert normalize("H3LL0 Wоrld").text == "h3ll0 world"
    assert normalize("H3LL0 Wоrld", leet=True).text == "hello world"
    assert normalize("H3LL0 Wоrld", fold_case=False).text == "H3LL0 World"
    assert normalize("Wоrld", homoglyphs=False).text == "wоrld"
    assert normalize("café", strip_marks=False).text == "café"
    assert normalize("café").text == "cafe"
    assert normalize("한국어").text == "한국어"  # Hangul syllables are not decomposed


# --- properties -----------------------------------------------------------------------------------

INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\U000e0020", "\ufe0f"]
LOOKALIKE = {"a": "аα", "c": "с", "e": "еε", "i": "іι", "k": "κк", "o": "оο", "p": "рρ", "s": "ѕ", "t": "т"}
TERMS = [
    ("fuck", "profanity"),
    ("shit", "profanity"),
    ("bitch", "profanity"),
    ("asshole", "profanity"),
    ("cunt", "profanity"),
    ("motherfucker", "profanity"),
    ("nigger", "hate"),
    ("faggot", "hate"),
    ("porn", "sexual"),
    ("blowjob", "sexual"),
    ("kill myself", "self_harm"),
    ("i will kill you", "violence"),
    ("pipe bomb", "weapons"),
    ("heil hitler", "extremism"),
]


@st.composite
def disguised(draw: st.DrawFn, term: str) -> str:
    out = []
    for i, char in enumerate(term):
        if char != " ":
            style = draw(st.sampled_from(["plain", "upper", "fullwidth", "lookalike"]))
            if style == "upper":
                char = char.upper()
            elif style == "fullwidth":
                char = chr(ord(char) + 0xFEE0)
            elif style == "lookalike" and char in LOOKALIKE:
                char = draw(st.sampled_from(LOOKALIKE[char]))
        out.append(char)
        if i < len(term) - 1 and draw(st.booleans()):
            out.append(draw(st.sampled_from(INVISIBLE)))
    return "".join(out)


ORDINARY_WORDS = [w for line in ORDINARY_ENGLISH for w in re.findall(r"[A-Za-z']{2,}", line)]
ORDINARY_WORDS = [  # without the words that are terms, or parts of phrases, alone
    w
    for w in ORDINARY_WORDS
    if w.lower()
    not in {"kill", "shoot", "you", "your", "burn", "cut", "go", "pussy", "tits", "chink", "dick", "my"}
]


@settings(max_examples=300, deadline=None)
@given(data=st.data(), term=st.sampled_from(TERMS))
def test_any_disguise_of_a_term_is_found_with_its_span(
    lexicon: Lexicon, data: st.DataObject, term: tuple[str, str]
) -> None:
    phrase, category = term
    word = data.draw(disguised(phrase))
    before = " ".join(data.draw(st.lists(st.sampled_from(ORDINARY_WORDS), max_size=4)))
    after = " ".join(data.draw(st.lists(st.sampled_from(ORDINARY_WORDS), max_size=4)))
    text = f"{before} oh {word}. Regards, {after}"
    assert found(lexicon, text) == [(category, word)]


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(st.sampled_from(ORDINARY_WORDS), min_size=1, max_size=30),
    separators=st.lists(st.sampled_from([" ", ", ", ". ", "\n", " - ", "; "]), min_size=30, max_size=30),
    upper=st.booleans(),
)
def test_ordinary_sentences_are_left_alone(
    lexicon: Lexicon, words: list[str], separators: list[str], upper: bool
) -> None:
    text = "".join(w + s for w, s in zip(words, separators, strict=False))
    assert lexicon.find(text.upper() if upper else text) == []


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text_gives_sorted_in_bounds_findings(lexicon: Lexicon, text: str) -> None:
    findings = lexicon.find(text)
    assert all(0 <= f.start < f.end <= len(text) for f in findings)
    assert findings == sorted(findings, key=lambda f: (f.start, f.end, f.category, f.rule))
    assert all(f.category in CATEGORIES for f in findings)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_invisible_characters_change_nothing(lexicon: Lexicon, data: st.DataObject) -> None:
    text = "well fuck you, 傻逼, I will kill you and go f u c k yourself"
    positions = data.draw(st.lists(st.integers(0, len(text)), max_size=10))
    noisy = text
    for position in sorted(positions, reverse=True):
        noisy = noisy[:position] + data.draw(st.sampled_from(INVISIBLE)) + noisy[position:]
    assert [f.rule for f in lexicon.find(noisy)] == [f.rule for f in lexicon.find(text)]


def test_every_bundled_entry_finds_itself(lexicon: Lexicon) -> None:
    data = tomllib.loads(DEFAULT_LEXICON_FILE.read_text(encoding="utf-8"))
    missed = []
    for lang in ("en", "zh"):
        for category, items in data[lang].items():
            for item in items:
                for phrase in expand(item):
                    spans = [(f.category, f.start, f.end) for f in lexicon.find(phrase)]
                    if (category, 0, len(phrase)) not in spans:
                        missed.append(phrase)
    assert missed == []


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    term=st.sampled_from(TERMS),
    cut=st.floats(min_value=0, max_value=1),
)
def test_scan_is_find_and_pending_start_together(
    lexicon: Lexicon, data: st.DataObject, term: tuple[str, str], cut: float
) -> None:
    """The streaming filter's one-pass check gives what the two checks give on their own, also on a
    text cut anywhere (mid-word, mid-disguise), with or without the caller's normalization."""
    before = " ".join(data.draw(st.lists(st.sampled_from(ORDINARY_WORDS), max_size=4)))
    full = f"{before} {data.draw(disguised(term[0]))} 你好 f u c"
    text = full[: round(len(full) * cut)]
    expected = (lexicon.find(text), lexicon.pending_start(text))
    assert lexicon.scan(text) == expected
    assert lexicon.scan(text, normalize(text)) == expected
