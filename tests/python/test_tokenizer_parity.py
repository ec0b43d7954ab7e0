"""Token-for-token parity of atomserve's tokenizer with Hugging Face `tokenizers`.

Three pre-tokenizer families are checked on the same few thousand generated
strings (fixed seed; prose, code, whitespace runs, digits, contractions, many
scripts, emoji, code point soup, special tokens):

  smollm  SmolLM2's tokenizer rebuilt in Python from the GGUF vocabulary and
          merges (this reproduces the published tokenizer.json); atomserve
          reads it both from the GGUF (--gguf) and from the saved tokenizer.json.
  gpt2    a small byte-level BPE trained here with the ByteLevel pre-tokenizer.
  llama3  a small byte-level BPE trained here with Llama-3's Split pattern
          and ignore_merges, as in Meta's tokenizer.json.

For every string the ids of tests/tokenize_tool must equal
tokenizers' encode(s, add_special_tokens=False).ids, and decoding them must
give the string back.
"""
import json
import os
import pathlib
import random
import subprocess
import unicodedata

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

SEED = 20240611
NUM_RANDOM = 3000

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# ------------------------------------------------------------ test strings

WORDS = ("the quick brown fox jumps over a lazy dog while tokenizers split text into pieces "
         "model inference server request latency batch cache memory thread kernel "
         "Hello World Python Rust CUDA GPU NVIDIA HuggingFace SmolLM Llama").split()
CONTRACTIONS = ["I'm", "you're", "they've", "we'll", "he'd", "it's", "don't", "can't", "I'M", "YOU'RE",
                "They'VE", "WE'LL", "she'D", "IT'S", "it’s", "don’t", "we’re", "'s", "'t", "''s", "' s",
                "'ſ", "'ſt", "'Ss", "rock'n'roll", "'''", "x'y"]
SCRIPTS = [
    "你好，世界！今天天气很好。", "日本語のテキストとカタカナ、ひらがな。", "한국어 문장입니다.",
    "Привет, мир! Съешь же ещё этих мягких французских булок.", "Γειά σου Κόσμε, αβγδ ΑΒΓΔ",
    "مرحبا بالعالم، هذا نص عربي ١٢٣٤٥", "שלום עולם, זה טקסט בעברית", "नमस्ते दुनिया, यह हिंदी है ०१२३",
    "สวัสดีชาวโลก", "ሰላም ልዑል", "Ελληνικά και ελληνικά", "ქართული ენა", "Հայերեն", "ᚠᚢᚦᚨᚱᚲ",
    "café naïve résumé Ångström Øresund façade coöperate", "e\u0301 a\u0308 o\u0302 n\u0303",
    "Straße ß ẞ ﬁ ﬂ ﬆ Ǆ ǅ ǆ", "ℌ𝔢𝔩𝔩𝔬 𝐁𝐨𝐥𝐝 𝟙𝟚𝟛", "ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ　１２３",
]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸🇫🇷", "❤️", "🧑🏿‍🚀", "✌︎", "🤖🔥💯", "#️⃣", "👩‍💻 coding"]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["…", "—", "–", "«", "»", "“", "”", "‘", "’", "·", "•", "§",
                                                    "©", "®", "™", "°", "±", "×", "÷", "€", "£", "¥", "¿", "¡"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\n ", "\t\t", " \t", "\u00a0", "\u3000",
          "\u2009", "\u200b", "\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\r", "\x1c", "\u180e", "\ufeff"]
DIGITS = ["0", "7", "42", "123", "2024", "31415926535", "1,000,000", "3.14", "1e-9", "0x1F", "٣٤٥",
          "०१२", "１２３", "²³", "½¾", "ⅫⅣ", "①②", "𝟘𝟙", "፩፪", "〇一二"]
CODE = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "const x = {a: 1, 'b': [2, 3], \"c\": null};  // comment\n",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name;",
    "#include <vector>\nint main() { return 0; }\n",
    "    \n    \n\n\tif x:\n\t\tpass   \n",
    "<html><body class=\"main\">&nbsp;&lt;div&gt;</body></html>",
    "$ ls -la | grep '\\.py$' && echo \"done\" > /dev/null 2>&1",
    "x=1;y=2;z=x+y*3-4/5%6**7",
]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>", "<jupyter_code>",
            "<|im_start", "im_end|>", "<|", "|>", "<|eot_id|>", "<|begin_of_text|>"]
FIXED = [
    "", " ", "  ", "\n", "\n\n\n", " \n ", "a", "a ", " a", "a  ", "  a", "\ta", "\t a", " \ta", "a\t",
    "hello world", "Hello,  world!  ", "word\n\n\nword", "x \n\n y", "a\r\n\r\n  b", "1 2  3   4",
    "I'm here, you're there, they've gone, we'll see, he'd know.", "  leading and trailing  ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|>", "text<|endoftext|>text", "<|im_start|<|im_start|>|>", " <|im_end|> ",
    "<<|im_start|>>", "<|im_start|>\n\n<|im_end|>", "\u00a0\u00a0word", "word\u3000\u3000", "\u2028x",
    "!!!???...---***", "a!b?c.d", " !! ", "'hello' \"world\"", "12345678901234567890", "abc123def456",
    "   123", "\n123\n", "((((x))))", "    ", "\t\t\t", "\r\r\n\n", "'s's's", "Don'tStop", "ABC'S",
]


def soup(rng, n):
    """Random assigned code points from many blocks (no surrogates)."""
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0xDFF),
              (0xE00, 0xFFF), (0x1000, 0x1FFF), (0x2000, 0x2BFF), (0x2E80, 0x33FF), (0x3400, 0x4DBF),
              (0x4E00, 0x9FFF), (0xA000, 0xABFF), (0xAC00, 0xD7A3), (0xF900, 0xFFFD), (0x10000, 0x1FFFF),
              (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0xE0000, 0xE007F), (0xF0000, 0xF00FF)]
    out = []
    while len(out) < n:
        lo, hi = rng.choice(blocks)
        c = chr(rng.randint(lo, hi))
        # Unassigned code points are left out: their class depends on the
        # Unicode version of each side (HF's regex engine tracks newer
        # releases than runtime/unicode_tables.inc).
        if unicodedata.category(c) not in ("Cn", "Cs"):
            out.append(c)
    return "".join(out)


def random_string(rng):
    kind = rng.randrange(12)
    if kind == 0:
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 20))]
        s = " ".join(words)
        return s[:1].upper() + s[1:] + rng.choice([".", "!", "?", "", "...", " "])
    if kind == 1:
        return rng.choice(CODE)[rng.randint(0, 10):]
    if kind == 2:
        return soup(rng, rng.randint(1, 40))
    # Everything else: a mixture of fragments joined by random separators.
    pools = [WORDS, CONTRACTIONS, SCRIPTS, EMOJI, PUNCT, SPACES, DIGITS, CODE, SPECIALS]
    parts = []
    for _ in range(rng.randint(1, 12)):
        pool = rng.choice(pools)
        part = rng.choice(pool)
        if pool is SCRIPTS and rng.random() < 0.5:
            i = rng.randint(0, len(part))
            part = part[i:i + rng.randint(1, 12)]
        parts.append(part)
        if rng.random() < 0.6:
            parts.append(rng.choice(SPACES + ["", "", " ", " "]))
    if rng.random() < 0.2:
        parts.append(soup(rng, rng.randint(1, 5)))
    return "".join(parts)


def make_strings():
    rng = random.Random(SEED)
    strings = list(FIXED)
    strings += CONTRACTIONS + SCRIPTS + EMOJI + CODE + DIGITS + SPECIALS
    strings += [random_string(rng) for _ in range(NUM_RANDOM)]
    strings.append(" ".join(random_string(rng) for _ in range(300)))  # one long text
    return strings


STRINGS = make_strings()

# ------------------------------------------------------------ helpers


def family_pre_tokenizer(family):
    """The HF pre-tokenizer pipeline each atomserve family stands for."""
    if family == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if family == "smollm":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def tool_path(build_dir):
    p = pathlib.Path(build_dir) / "tests" / "tokenize_tool"
    if not p.exists():
        pytest.fail(f"tokenize_tool not built at {p}")
    return p


def run_tool(build_dir, args, strings):
    """Encodes strings with tokenize_tool; returns its decoded JSON objects."""
    stdin = "".join(json.dumps(s) + "\n" for s in strings).encode()
    proc = subprocess.run([str(tool_path(build_dir))] + [str(a) for a in args], input=stdin,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, f"tokenize_tool {args} failed: {proc.stderr.decode(errors='replace')}"
    # Split on bytes: decoded text may hold U+2028 etc., which str.splitlines() breaks on.
    lines = proc.stdout.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(strings) + 1, "tokenize_tool output line count"
    return [json.loads(line) for line in lines[:-1]]


def compare(hf, results, strings, label):
    """Asserts equal ids and exact round trips; reports the first mismatches."""
    expected = [e.ids for e in hf.encode_batch(strings, add_special_tokens=False)]
    id_mismatch, decode_mismatch = [], []
    for s, want, got in zip(strings, expected, results):
        if got.get("ids") != want:
            id_mismatch.append(f"{s!r}\n    hf:  {want}\n    ours: {got.get('ids')}")
        if got.get("decoded") != s:
            decode_mismatch.append(f"{s!r} -> {got.get('decoded', got.get('decoded_hex'))!r}")
    msg = (f"{label}: {len(id_mismatch)}/{len(strings)} id mismatches, "
           f"{len(decode_mismatch)} decode mismatches\n" + "\n".join(id_mismatch[:5] + decode_mismatch[:5]))
    assert not id_mismatch and not decode_mismatch, msg
    # HF's own decode agrees too (sanity check of the reference setup).
    hf_decoded = hf.decode_batch(expected, skip_special_tokens=False)
    bad = [s for s, d in zip(strings, hf_decoded) if s != d]
    assert not bad, f"{label}: HF decode differs for {bad[:3]!r}"
    print(f"{label}: {len(strings)} strings, 0 mismatches")


# ------------------------------------------------------------ smollm


def smollm2_hf_tokenizer(gguf_path):
    """SmolLM2's tokenizer from the GGUF vocabulary and merges."""
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(gguf_path))

    def strings(name):
        field = reader.fields[name]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ")) for m in strings("tokenizer.ggml.merges")]
    types_field = reader.fields["tokenizer.ggml.token_type"]
    types = [int(types_field.parts[i][0]) for i in types_field.data]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = family_pre_tokenizer("smollm")
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    return tok


@pytest.fixture(scope="module")
def smollm2(smollm2_path, tmp_path_factory):
    hf = smollm2_hf_tokenizer(smollm2_path)
    path = tmp_path_factory.mktemp("smollm2") / "tokenizer.json"
    hf.save(str(path))
    return hf, path


def test_smollm2_gguf_parity(smollm2, smollm2_path, build_dir):
    hf, _ = smollm2
    compare(hf, run_tool(build_dir, ["--gguf", smollm2_path], STRINGS), STRINGS, "smollm (gguf)")


def test_smollm2_tokenizer_json_parity(smollm2, build_dir):
    hf, path = smollm2
    compare(hf, run_tool(build_dir, ["--tokenizer-json", path], STRINGS), STRINGS, "smollm (tokenizer.json)")


def test_smollm2_known_ids(smollm2, build_dir):
    """A few fixed encodings, so a wrong reference setup cannot pass silently."""
    _, path = smollm2
    cases = {
        "Hello world! It's 12345 <|im_start|>user\n  hi":
            [19556, 905, 17, 657, 506, 216, 33, 34, 35, 36, 37, 216, 1, 4093, 3805, 15876],
    }
    results = run_tool(build_dir, ["--tokenizer-json", path], list(cases))
    assert [r["ids"] for r in results] == list(cases.values())


def test_smollm2_special_tokens_as_text(smollm2, build_dir):
    hf, path = smollm2
    strings = [s for s in STRINGS if "<" in s]
    results = run_tool(build_dir, ["--tokenizer-json", path, "--no-special"], strings)
    # HF's switch for the same behaviour (all of SmolLM2's added tokens are special).
    plain = Tokenizer.from_str(hf.to_str())
    plain.encode_special_tokens = True
    compare(plain, results, strings, "smollm (special tokens as text)")


# ------------------------------------------------------------ gpt2 / llama3


def train_tokenizer(family, corpus, tmp_path):
    """A tiny byte-level BPE of the given family, saved as tokenizer.json."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = family_pre_tokenizer(family)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(corpus, trainer=trainer)
    # An added special token with characters outside the byte alphabet (it
    # decodes verbatim) and an ordinary added token.
    tok.add_special_tokens([AddedToken("<|reserved special token 0|>", special=True, normalized=False)])
    tok.add_tokens([AddedToken("<custom>", special=False, normalized=False)])
    doc = json.loads(tok.to_str())
    doc["model"]["ignore_merges"] = family == "llama3"  # as in Meta's Llama-3 tokenizer.json
    path = tmp_path / f"{family}_tokenizer.json"
    path.write_text(json.dumps(doc, ensure_ascii=False))
    return Tokenizer.from_file(str(path)), path


@pytest.mark.parametrize("family", ["gpt2", "llama3"])
def test_trained_family_parity(family, build_dir, tmp_path):
    rng = random.Random(SEED + 1)
    corpus = [random_string(rng) for _ in range(4000)] + FIXED + SCRIPTS + CODE
    hf, path = train_tokenizer(family, corpus, tmp_path)
    assert json.loads(path.read_text())["model"]["ignore_merges"] == (family == "llama3")
    strings = STRINGS + ["a <|reserved special token 0|> b", "x<custom>y", "<custom><|im_end|>"]
    compare(hf, run_tool(build_dir, ["--tokenizer-json", path], strings), strings, family)


def test_llama3_ignore_merges_matters(build_dir, tmp_path):
    """ignore_merges changes ids when a word is in the vocabulary but merges
    alone would not build it; atomserve must follow the file's setting."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(alphabet + ["ab", "bc", "abc"])}
    merges = [("a", "b"), ("b", "c")]  # "abc" is reachable only as a whole word
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=True))
    tok.pre_tokenizer = family_pre_tokenizer("llama3")
    tok.decoder = decoders.ByteLevel()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    strings = ["abc", "abc abc", "abcabc", "bc ab"]
    compare(tok, run_tool(build_dir, ["--tokenizer-json", path], strings), strings, "llama3 ignore_merges")
    assert tok.encode("abc").ids == [vocab["abc"]]


# ------------------------------------------------------------ pre-tokenizers alone
#
# Merges can hide a wrong split (two pieces that happen to encode like one),
# so the pre-tokens themselves are compared too, against HF's pre_tokenize_str
# (whose offsets give the pieces of the original text).


def class_probe_strings():
    """Three strings per assigned code point that expose its class: after a
    letter, after a digit and after a tab."""
    out = []
    for cp in range(0x110000):
        c = chr(cp)
        if unicodedata.category(c) not in ("Cn", "Cs", "Co"):
            out += ["a" + c, "1" + c, "\t" + c]
    return out


@pytest.mark.parametrize("family", ["gpt2", "smollm", "llama3"])
def test_pretokenizer_parity(family, build_dir, tmp_path):
    pre = family_pre_tokenizer(family)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({ch: i for i, ch in enumerate(alphabet)}, [], ignore_merges=family == "llama3"))
    tok.pre_tokenizer = pre
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    strings = STRINGS + class_probe_strings()
    results = run_tool(build_dir, ["--tokenizer-json", path, "--pretokenize"], strings)
    mismatches = []
    for s, got in zip(strings, results):
        want = [s[a:b] for _, (a, b) in pre.pre_tokenize_str(s)]
        if got.get("pieces") != want:
            mismatches.append(f"{s!r}\n    hf:   {want!r}\n    ours: {got.get('pieces')!r}")
    assert not mismatches, (f"{family}: {len(mismatches)}/{len(strings)} pre-tokenization mismatches\n"
                            + "\n".join(mismatches[:8]))
    print(f"{family} pre-tokenizer: {len(strings)} strings, 0 mismatches")
