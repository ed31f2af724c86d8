"""Text material for the golden generator: the SentencePiece training corpus and the tokenizer test prompts.

Everything here is deterministic (fixed lists plus `random.Random(seed)`), so the trained spiece.model and the
prompt list are identical on every run.
"""

import random

# ---------------------------------------------------------------------------------------------------------------
# Training corpus
# ---------------------------------------------------------------------------------------------------------------

_ENGLISH = [
    "A golden retriever runs across a sunny meadow, chasing a red ball.",
    "The camera slowly pans over a misty mountain lake at dawn.",
    "A panda, dressed in a small red jacket and a tiny hat, sits on a wooden stool in a serene bamboo forest.",
    "An astronaut floats above the Earth while the sun rises behind the horizon.",
    "Waves crash against black volcanic rocks under a stormy sky.",
    "A busy street in Tokyo at night, neon signs reflecting on wet pavement.",
    "A chef slices fresh vegetables on a wooden board in a bright kitchen.",
    "Close-up of a hummingbird hovering next to a purple flower.",
    "A vintage car drives along a coastal road during sunset.",
    "Children fly colorful kites on a windy beach in the afternoon.",
    "A time-lapse of clouds moving over a quiet desert landscape.",
    "The old lighthouse stands alone on the cliff, its beam sweeping the dark sea.",
    "A cup of hot coffee steams on a table next to an open book.",
    "Snow falls gently on a small village with warm lights in every window.",
    "A drone shot of a winding river cutting through a green valley.",
    "A cat sleeps on a windowsill while rain streaks down the glass.",
    "Fireworks explode over the city skyline, reflected in the harbor.",
    "A young woman plays the violin on a stage lit by a single spotlight.",
    "Autumn leaves swirl in the wind along an empty park path.",
    "A robot carefully waters plants in a futuristic greenhouse.",
    "The train speeds through the countryside, fields blurring past the window.",
    "A school of fish swims through a coral reef full of bright colors.",
    "An old man feeds pigeons in a quiet square on a cold morning.",
    "Lightning strikes a lone tree in the middle of a wide field.",
    "A horse gallops along the shore, splashing through shallow water.",
    "Steam rises from a bowl of noodles in a small street restaurant.",
    "A spaceship lands on a red planet covered with dust and rocks.",
    "The painter adds the final brush strokes to a large canvas.",
    "Hot air balloons drift over green hills in the early morning.",
    "A wolf howls at the full moon on a snowy ridge.",
    "Two friends laugh while riding bicycles down a tree-lined avenue.",
    "Candles flicker in a dark room, casting long shadows on the walls.",
    "A waterfall pours into a deep blue pool surrounded by ferns.",
    "A street musician plays guitar while people walk by.",
    "The sun sets behind the pyramids, painting the sky orange and pink.",
    "A small boat sails across a calm lake surrounded by pine trees.",
    "Macro shot of dew drops on a spider web in the morning light.",
    "A dancer spins gracefully across a wooden floor in slow motion.",
    "A fox walks through fresh snow, leaving a trail of footprints.",
    "Traffic flows through a busy intersection seen from above.",
    "The baker pulls a tray of fresh bread out of the oven.",
    "An eagle soars over a canyon with sharp red cliffs.",
    "Rain falls on a pond, creating rings that spread and overlap.",
    "A girl reads a book under a large oak tree on a summer day.",
    "Sparks fly as a blacksmith hammers a glowing piece of iron.",
    "Jellyfish glow softly in the dark water of an aquarium.",
    "A skateboarder performs a trick in an empty concrete pool.",
    "The northern lights dance in green ribbons above a frozen lake.",
    "A butterfly lands on the finger of a smiling child.",
    "Smoke curls from the chimney of a cabin in the woods.",
    "numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14 42% 7:30 #1 @home",
    "It's a beautiful day; isn't it? Yes -- absolutely! (Really.) [Note] {x} <tag> a/b a\\b a|b a~b a^b a*b a+b=c",
    "Email me at someone@example.com or visit https://example.org/path?query=1&x=2.",
]

_OTHER = [
    # French
    "Le café est très chaud et la crème brûlée est déjà prête pour l'été.",
    "Une forêt enneigée, où les sapins scintillent sous la lumière de la lune.",
    "Ça va ? Oui, très bien, merci ! Où est la gare, s'il vous plaît ?",
    "Les élèves étudient à la bibliothèque près de la fenêtre ouverte.",
    # German
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "Die Straße führt durch einen dunklen Wald zu einem großen Schloss.",
    "Fünf Bären schwimmen im kühlen Fluss, während die Vögel singen.",
    # Spanish / Portuguese
    "El niño pequeño juega en el jardín con su perro mañana por la mañana.",
    "¿Dónde está la estación? ¡Qué día tan bonito en la montaña!",
    "A canção do coração ecoa pela praia ao pôr do sol, não é?",
    "São Paulo é uma cidade enorme, cheia de ação e emoção.",
    # Nordic / Eastern Europe
    "Smörgåsbord på ön, och en älg i skogen nära sjön.",
    "Zażółć gęślą jaźń, powiedział Łukasz w Łodzi.",
    "Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Árvíztűrő tükörfúrógép a Balaton partján.",
    # Vietnamese / Turkish
    "Tiếng Việt có nhiều dấu thanh và chữ cái đặc biệt.",
    "İstanbul'da güneşli bir gün, çay ve şeker.",
    # Greek / Cyrillic
    "Ο ήλιος λάμπει πάνω από τη θάλασσα και τα βουνά.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "Привет, мир! Как дела? Всё хорошо.",
    # CJK
    "东京的夜景非常美丽，街道上有很多人。",
    "一只熊猫坐在竹林里吃竹子。",
    "東京の夜景はとても美しいです。",
    "猫が窓のそばで眠っています。",
    "서울의 밤거리는 아주 밝고 활기차다.",
    "고양이가 창문 옆에서 자고 있어요.",
    # misc symbols
    "Temperature: 20°C, distance: 5 km, price: €12.50 or £10 or ¥1000.",
    "Math: α + β = γ, x² + y² = z², ∑ i = n(n+1)/2, π ≈ 3.14159.",
    "Emoji: 🐼 🎬 🌅 ✨ 😀 ❤ ⭐ 🚀",
    "“Quoted text” and ‘single quotes’ — with an em dash… and an ellipsis.",
]

_WORDS = (
    "the a an of and to in on at by for with from over under into onto through across along behind beside "
    "between among around near far above below cat dog panda horse bird fish wolf fox bear tiger lion eagle "
    "owl rabbit deer whale dolphin turtle frog butterfly bee robot astronaut chef dancer painter child woman "
    "man girl boy farmer sailor pilot doctor teacher student musician knight queen king dragon city village "
    "forest desert ocean river lake mountain valley beach island street road bridge tower castle garden park "
    "kitchen room window door table chair book lamp candle car train boat plane bicycle balloon rocket "
    "spaceship planet moon sun star cloud rain snow storm wind fire smoke water light shadow night morning "
    "evening afternoon sunset sunrise dawn dusk spring summer autumn winter red orange yellow green blue "
    "purple pink white black gray golden silver bright dark soft loud quiet slow fast small large tiny huge "
    "old young new ancient modern beautiful cinematic realistic detailed colorful vivid calm wild gentle "
    "runs walks flies swims jumps dances sings plays reads writes paints cooks sleeps smiles laughs looks "
    "turns rises falls glows shines moves drifts spins floats crashes flows grows opens closes holds "
    "camera shot close-up wide angle aerial view slow motion time-lapse tracking zoom pan tilt focus frame "
    "scene video film movie style lighting mood atmosphere texture background foreground detail motion"
).split()

_ACCENTED_WORDS = (
    "café crème brûlée déjà été naïve façade garçon über straße größe fünf mañana niño jardín corazón "
    "canção ação são smörgåsbord ön sjön łódź gęślą příliš kůň tiếng việt đặc güneş şeker İstanbul "
    "ήλιος θάλασσα βουνά лиса собака мир привет 熊猫 竹林 東京 夜景 美しい 猫 서울 고양이 ½ ① ﬁ Ⅻ ｶ ＡＢＣ"
).split()


def training_corpus():
    """Sentences used to train the tiny SentencePiece unigram model."""
    rng = random.Random(20240607)
    lines = list(_ENGLISH) + list(_OTHER)
    for _ in range(1500):
        n = rng.randint(4, 18)
        words = []
        for _ in range(n):
            if rng.random() < 0.12:
                words.append(rng.choice(_ACCENTED_WORDS))
            else:
                words.append(rng.choice(_WORDS))
        s = " ".join(words)
        if rng.random() < 0.5:
            s = s[0].upper() + s[1:]
        s += rng.choice([".", ".", ",", "!", "?", ";", ""])
        lines.append(s)
    # a few repeats of the hand-written sentences so their words become whole pieces
    lines += (_ENGLISH + _OTHER) * 3
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer test prompts
# ---------------------------------------------------------------------------------------------------------------

_HANDWRITTEN_PROMPTS = [
    # plain English
    "A golden retriever runs across a sunny meadow, chasing a red ball.",
    "A panda, dressed in a small red jacket and a tiny hat, sits on a wooden stool in a serene bamboo forest.",
    "a cat",
    "A",
    "a",
    ".",
    "Hello world",
    "hello, world!",
    "UPPERCASE WORDS ONLY",
    "MiXeD cAsE wOrDs",
    "numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14 42% 7:30 #1 @home",
    "12345678901234567890",
    "It's a beautiful day; isn't it? Yes -- absolutely! (Really.)",
    "brackets [x] {y} <z> (w) and slashes a/b a\\b a|b",
    "Email me at someone@example.com or visit https://example.org/path?query=1&x=2.",
    "zzzzqqqqxxxx unknownword supercalifragilisticexpialidocious",
    "the the the the the the the the",
    # accents / European scripts
    "Le café est très chaud et la crème brûlée est déjà prête.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "El niño pequeño juega en el jardín.",
    "¿Dónde está la estación? ¡Qué día tan bonito!",
    "Zażółć gęślą jaźń",
    "Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Tiếng Việt có nhiều dấu thanh.",
    "İstanbul'da güneşli bir gün.",
    "Ο ήλιος λάμπει πάνω από τη θάλασσα.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "naïve façade garçon",
    # decomposed accents (NFD input: e + combining acute) -> NFKC composes
    "cafe\u0301 cre\u0300me bru\u0302le\u0301e",
    "A\u030angstro\u0308m",
    # CJK
    "东京的夜景非常美丽，街道上有很多人。",
    "一只熊猫坐在竹林里吃竹子。",
    "東京の夜景はとても美しいです。",
    "猫が窓のそばで眠っています。",
    "서울의 밤거리는 아주 밝고 활기차다.",
    "A panda 熊猫 eats bamboo 竹子 in 東京.",
    "漢字かなカタカナ한글",
    # emoji (mostly unknown to the tiny vocab)
    "Emoji: 🐼 🎬 🌅 ✨ 😀 ❤ ⭐ 🚀",
    "🐼🐼🐼",
    "family 👨‍👩‍👧‍👦 and flag 🇫🇷 and skin tone 👍🏽",
    "heart ❤️ with variation selector",
    # unicode punctuation / NFKC
    "“Quoted text” and ‘single quotes’ — with an em dash… and an ellipsis.",
    "Full-width: ＡＢＣ ａｂｃ １２３ ！？",
    "ｶﾀｶﾅ half-width katakana ｱｲｳｴｵ",
    "ligatures: ﬁ ﬂ ﬀ ﬃ",
    "fractions ½ ¼ ¾ and superscripts x² y³ and circled ① ② ③",
    "roman numerals Ⅰ Ⅱ Ⅲ Ⅻ",
    "math α + β = γ, ∑ i = n(n+1)/2, π ≈ 3.14159, ∞ ≠ ≤ ≥",
    "currency €12.50 £10 ¥1000 ₩500 $3",
    "degrees 20°C and 70℉ and ℃",
    "non\u00a0breaking\u00a0spaces",
    "ideographic\u3000space",
    "em\u2003space and thin\u2009space and hair\u200aspace",
    "zero\u200bwidth\u200bspace",
    "soft\u00adhyphen",
    "zero width joiner a\u200db",
    "bom \ufeff inside",
    "control chars a\u0001b\u007fc",
    "right-to-left: שלום עולם and مرحبا بالعالم",
    "Devanagari: नमस्ते दुनिया",
    "Thai: สวัสดีชาวโลก",
    "tilde ~ and backtick ` and caret ^",
    "l'été c'est l’été",
    "dash - en – em — minus −",
    "‼ ⁇ ⁈ ⁉",
    "™ © ®",
    "…",
    "\u2028line separator\u2029paragraph separator",
    # whitespace handling
    "",
    " ",
    "   ",
    "\t",
    "\n",
    " \t \n ",
    " leading space",
    "   leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "  both sides  ",
    "double  space",
    "triple   space",
    "many          spaces          here",
    "tab\tseparated\twords",
    "tab\t\tdouble",
    "new\nline",
    "new\n\nlines",
    "windows\r\nline end",
    "mixed \t\n whitespace \n\t run",
    "\tleading tab",
    "trailing newline\n",
    "▁already▁has▁metaspace",
    "▁",
    " ▁ ",
    "__under_scores__",
    # special-token strings
    "<extra_id_3>",
    "a <extra_id_3> b",
    "a<extra_id_3>b",
    "<extra_id_0> and <extra_id_99>",
    "<extra_id_100> is not special",
    "</s>",
    "a </s> b",
    "a</s>b",
    "<pad>",
    "<unk>",
    "a <pad> b <unk> c",
    "</s></s>",
    "<extra_id_3></s><pad>",
    "<s> is not a token here",
    "<EXTRA_ID_3> uppercase",
]


def _random_prompts(n, seed):
    """Fuzz prompts drawn from a mixed character pool (letters, accents, CJK, punctuation, spaces)."""
    rng = random.Random(seed)
    pool = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list(".,;:!?'\"()[]-_/&%#@*+=")
        + list("éèêëàâäôöûüçñßøåæœ")
        + list("东京熊猫竹夜景猫한글カタ")
        + list("“”‘’—…«»¡¿")
        + list("ＡＢ１２ｶﾀﬁ½①")
        + ["🐼", "🚀", "😀"]
    )
    ws = [" ", " ", " ", " ", "  ", "\t", "\n", "\u3000", "\u00a0"]
    out = []
    for _ in range(n):
        parts = []
        length = rng.randint(1, 12)
        for _ in range(length):
            wl = rng.randint(1, 9)
            if rng.random() < 0.6:
                parts.append(rng.choice(_WORDS + _ACCENTED_WORDS))
            else:
                parts.append("".join(rng.choice(pool) for _ in range(wl)))
            parts.append(rng.choice(ws))
        s = "".join(parts)
        if rng.random() < 0.3:
            s = rng.choice(ws) + s
        if rng.random() < 0.5:
            s = s.rstrip()
        out.append(s)
    return out


def _long_prompts():
    """Prompts long enough to be truncated at 225 pieces + EOS (and some right at the boundary)."""
    base = (
        "A cinematic aerial shot of a winding river cutting through an autumn forest, golden leaves drifting "
        "in the wind, soft morning light, mist rising from the water, a small wooden boat with a fisherman, "
        "birds flying over the trees, detailed, realistic, slow camera movement. "
    )
    out = [
        base * 6,
        base * 12,
        ("word " * 300).strip(),
        "x" * 500,
        "熊猫" * 200,
        " ".join(str(i) for i in range(400)),
        ("café " * 120).strip(),
        "a " * 224,
        "a " * 225,
        "a " * 226,
        "a" + " a" * 223,
        "a" + " a" * 224,
        "a" + " a" * 225,
        "🐼 " * 250,
        "<extra_id_3> " * 240,
        ("hello </s> " * 80).strip(),
    ]
    return out


def tokenizer_prompts():
    prompts = list(_HANDWRITTEN_PROMPTS)
    prompts += _long_prompts()
    # whitespace variants of a few plain prompts
    bases = ["A cat sits on the mat.", "Le café est très chaud.", "東京の夜景", "Emoji 🐼 here"]
    for b in bases:
        prompts += ["  " + b, b + "  ", b.replace(" ", "  "), b.replace(" ", "\t"), b.replace(" ", "\n"),
                    b.replace(" ", " \u3000 ")]
    prompts += _random_prompts(110, seed=77)
    # de-duplicate preserving order
    seen = set()
    uniq = []
    for p in prompts:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    return uniq


# Prompts whose T5 embeddings are stored in golden/t5.safetensors.
T5_PROMPTS = [
    "",
    "A panda, dressed in a small red jacket and a tiny hat, sits on a wooden stool in a serene bamboo forest.",
    "Le café est très chaud et la crème brûlée est déjà prête.",
    "东京的夜景非常美丽 🐼",
    ("A cinematic aerial shot of a winding river cutting through an autumn forest, golden leaves drifting "
     "in the wind. ") * 12,
]
