#!/usr/bin/env python3
"""Generate tests/fixtures/templates/*.json: conversations and the text that
transformers' apply_chat_template renders for them (tokenize=False;
add_generation_prompt=False as "text", and for the conversation without its
final assistant turn add_generation_prompt=True as "prompt_text"), for every
chat template luxtrain builds in.

The llama3.1 and mistral fixtures were written with transformers 4.51.3 and
carry no generation prompts yet; the others with transformers 5.24.0 (pinned in
tools/requirements-gen.txt), which rendered the llama3, qwen2.5, qwen3, gemma3
and chatml cases of 4.51.3 byte-identically. Regenerate a subset with --only:
    tools/gen_fixtures.sh run tools/gen_template_fixtures.py \
        --shared ../shared --templates /path/to/jinja-folder --only phi3,olmo2

The reference is transformers itself: each template is loaded into a
PreTrainedTokenizerFast built offline from a tokenizer.json (the vocabulary
does not matter for rendering) with the family's bos/eos tokens, and
tokenizer.apply_chat_template renders it.

Where each chat_template comes from:
  llama3   shared/tokenizers/llama3_1/tokenizer_config.json (this file carries
           the Meta-Llama-3-Instruct template, without the 3.1 system header)
  qwen3    shared/tokenizers/qwen3/tokenizer_config.json
  gemma3   shared/tokenizers/gemma3/tokenizer_config.json
  llama3.1 --templates/llama-3.1-8b-instruct.jinja: the chat_template of
           meta-llama/Llama-3.1-8B-Instruct's tokenizer_config.json (the
           tool-aware template with "Cutting Knowledge Date: December 2023" and
           date_string "26 Jul 2024"), taken from public copies of that file
  qwen2.5  --templates/qwen2.5-7b-instruct.jinja: Qwen/Qwen2.5-7B-Instruct's
           chat_template (2507 bytes), from public copies; regenerated with
           sha256 cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f
           (guidance-ai/guidance guidance/chat.py qwen2dot5_it_template @
           1ca154783f5c1ebedeb995c295fb78661fe29af1), which renders the
           earlier 4.51.3 cases byte-identically
  mistral  --templates/mistral-7b-instruct-v0.3.jinja: the chat_template of
           mistralai/Mistral-7B-Instruct-v0.3's tokenizer_config.json (the
           "v3" tool-aware template, 3959 bytes), from public copies
  chatml   the plain ChatML template written below (the example template of
           the transformers chat-templating docs)
  phi3, phi3.5, phi4-mini, olmo2, llama2, mistral-nemo: --templates/NAME.jinja
           as listed in PUBLIC_SOURCES below (each file's sha256 is checked
           before it is used, so a different text is refused, not rendered)
None of these template files are committed; only the rendered fixtures are.
"""
import argparse
import hashlib
import json
import os
import sys

from transformers import PreTrainedTokenizerFast

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def S(c):
    return {"role": "system", "content": c}


def U(c):
    return {"role": "user", "content": c}


def A(c):
    return {"role": "assistant", "content": c}


# The publishers' chat_template strings, as found in public copies (the
# Hugging Face repositories themselves are not reachable from here). Each entry:
# the model, the jinja file name under --templates, its sha256 (UTF-8 bytes,
# no trailing newline added), and where it was read: (repository, path,
# commit) first, then the further copies it was checked against.
PUBLIC_SOURCES = {
    "phi3": ("microsoft/Phi-3-mini-4k-instruct tokenizer_config.json chat_template",
             "phi-3-mini-4k-instruct.jinja",
             "dcaee66df77bfbb789ec541fe713218da30225a526f1db97138fc39ee6dc56aa",
             [("guidance-ai/guidance", "guidance/chat.py (phi3_mini_template, annotated with the HF URL, "
               "tokenizer_config.json#L119)", "1ca154783f5c1ebedeb995c295fb78661fe29af1"),
              ("a Rust test 'microsoft/Phi-3-mini-4k-instruct template, output checked against python "
               "transformers' (search index file id 70384538468)", "", "")]),
    "phi3.5": ("microsoft/Phi-3.5-mini-instruct tokenizer_config.json chat_template",
               "phi-3.5-mini-instruct.jinja",
               "78d976a442bcde2f0be15aafbb8e3050e1104f86732266f68403251b89982a90",
               [("ggerganov/llama.cpp", "models/templates/microsoft-Phi-3.5-mini-instruct.jinja "
                 "(fetched from the HF repo by scripts/get_chat_template.py)",
                 "7b5e0803c84435e8005725d8f9ddceb5d1820443"),
                ("undreamai/LLMUnity", "Runtime/LLMChatTemplates.cs (Phi3_5Template)",
                 "0fabfff1f01455c4831b393d178adc84acc95fc5")]),
    "phi4-mini": ("microsoft/Phi-4-mini-instruct tokenizer_config.json chat_template",
                  "phi-4-mini-instruct.jinja",
                  "febf589225c9728ab791f52e8897d7607a823d45368f0a4c92fa68997b40cce9",
                  [("guidance-ai/guidance", "guidance/chat.py (phi_4_mini_template, annotated with the HF URL, "
                    "tokenizer_config.json#L104)", "1ca154783f5c1ebedeb995c295fb78661fe29af1"),
                   ("an onnxruntime-genai C API test, 'From HuggingFace Python output for "
                    "microsoft/Phi-4-mini-instruct' (search index file id 60785024082)", "", ""),
                   ("gorilla BFCL Phi handler docstring (search index file id 36024298594)", "", "")]),
    "olmo2": ("allenai/OLMo-2-1124-7B-Instruct and -13B-Instruct tokenizer_config.json chat_template "
              "(bos_token = eos_token = <|endoftext|>)",
              "olmo-2-1124-instruct.jinja",
              "fe689ffbd6a4e2d0532d7480696b065b10e0e1eff3f9b9fc4bea415761e4bf4a",
              [("mauer4/Attention-From-Scratch", "weights/allenai/OLMo-2-1124-13B-Instruct/tokenizer_config.json "
                "(a vendored copy of the whole file)", "7b2eb9540b3955e12c8645aa55cb131d38223f01"),
               ("a Python dict of chat templates keyed 'allenai/OLMo-2-1124-7B' and '-13B' "
                "(search index file id 57921832368)", "", "")]),
    "llama2": ("meta-llama/Llama-2-7b-chat-hf tokenizer_config.json chat_template",
               "llama-2-7b-chat-hf.jinja",
               "e8d5b5a546d3f19df16a5320c614fab05bdc4edd50e850f1afd947b503ea41cf",
               [("guidance-ai/guidance", "guidance/chat.py (llama2_template, annotated with the HF URL, "
                 "tokenizer_config.json#L12)", "1ca154783f5c1ebedeb995c295fb78661fe29af1"),
                ("a C# template table (search index file id 16986353541)", "", "")]),
    "mistral-nemo": ("mistralai/Mistral-Nemo-Instruct-2407 tokenizer_config.json chat_template (v3-tekken)",
                     "mistral-nemo-instruct-2407.jinja",
                     "e4676cb56dffea7782fd3e2b577cfaf1e123537e6ef49b3ec7caa6c095c62272",
                     [("ggerganov/llama.cpp", "models/templates/mistralai-Mistral-Nemo-Instruct-2407.jinja "
                       "(fetched from the HF repo by scripts/get_chat_template.py)",
                       "7b5e0803c84435e8005725d8f9ddceb5d1820443"),
                      ("ggml-org/llama.cpp", "tests/test-chat-template.cpp (case 'Mistral-Nemo-Instruct-2407')",
                       "03f94f19a2c4c9d039fa1a84838fe3e2110cc28d")]),
}

CASES = [
    ("single_turn", [U("Wéi heescht d'Haaptstad vu Lëtzebuerg?"), A("D'Haaptstad ass Lëtzebuerg-Stad.")]),
    ("system", [S("Du bass en hëllefsbereeten Assistent, deen op Lëtzebuergesch äntwert."),
                U("Sot mer Moien!"), A("Moien! Wéi kann ech hëllefen?")]),
    ("multi_turn", [S("Äntwert kuerz."), U("Wat ass 2 + 2?"), A("4."), U("An 3 mol 3?"), A("9."),
                    U("Merci!"), A("Gär geschitt.")]),
    ("multi_turn_no_system", [U("Moien"), A("Moien, wéi geet et?"), U("Gutt, merci."), A("Dat freet mech.")]),
    ("whitespace", [S("  System mat Spatzen  \n"), U("\n  Fro mat Spatzen\t "),
                    A("\n\n  Äntwert mat Spatzen an Zeilen \n\n"), U("\u00a0nach eng\u3000"), A("\u2003Jo.\u00a0")]),
    ("unicode", [U("Schreif 'Äddi' an Emojien 🇱🇺😀 an e Zeechen ß, ë, é, ä."),
                 A("Äddi! 🇱🇺😀 — ß ë é ä « Gudde Moien » \u200b")]),
    ("newlines_inside", [U("Zielt bis dräi:\n"), A("1\n2\n3\n")]),
    ("think_history", [U("Fro 1"), A("<think>\nech iwwerleeën\n</think>\n\nÄntwert 1"), U("Fro 2"),
                       A("<think>\nnach eng Kéier\n</think>\n\nÄntwert 2")]),
    ("think_last_only", [U("Fro"), A("<think>Grond</think>Äntwert")]),
    ("tool_response_user", [U("Fro"), A("Ruff"), U("<tool_response>42</tool_response>"), A("Et ass 42.")]),
    ("empty_user", [U(""), A("Eng Äntwert op näischt.")]),
    ("not_alternating", [U("Eent"), U("Zwee"), A("Dräi")]),
    ("system_later", [U("Moien"), A("Moien"), S("Nei Regel"), U("Fro"), A("Äntwert")]),
    ("assistant_first", [A("Ech fänken un."), U("OK"), A("Gutt.")]),
    ("system_empty", [S(""), U("Moien"), A("Moien!")]),
    ("system_whitespace_only", [S(" \n"), U(" Fro ëmmer  "), A("  Äntwert ä é ë  ")]),
    ("user_blank", [U(" \n\t"), A("Et war eng eidel Fro.")]),
    ("system_second", [U("Moien"), S("Regel"), A("Äntwert")]),
    ("long_multi_turn", [S("Sief präzis."), U("Eent"), A("1"), U("Zwee"), A("2"), U("Dräi"), A("3"),
                         U("Véier"), A("4")]),
]

# name -> a function giving (template text, source, tokenizer.json used to build
# the tokenizer, bos, eos); only the templates asked for are read
def templates(shared, tdir):
    def cfg(folder):
        with open(os.path.join(shared, "tokenizers", folder, "tokenizer_config.json"), encoding="utf-8") as f:
            return json.load(f)["chat_template"]

    def jinja(name):
        with open(os.path.join(tdir, name), encoding="utf-8") as f:
            return f.read()

    tok = lambda folder: os.path.join(shared, "tokenizers", folder, "tokenizer.json")

    def public(name, tokfolder, bos, eos):
        model, fname, sha, where = PUBLIC_SOURCES[name]
        text = jinja(fname)
        got = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if got != sha:
            raise SystemExit("%s: sha256 %s, expected %s (not the text listed in PUBLIC_SOURCES)" % (fname, got, sha))
        return (text, "%s; sha256 %s; read from %s" % (model, sha, where[0][0] + " " + where[0][1] + " @ " + where[0][2]),
                tok(tokfolder), bos, eos)

    return {
        "llama3": lambda: (cfg("llama3_1"), "shared/tokenizers/llama3_1/tokenizer_config.json", tok("llama3_1"),
                   "<|begin_of_text|>", "<|eot_id|>"),
        "llama3.1": lambda: (jinja("llama-3.1-8b-instruct.jinja"), "meta-llama/Llama-3.1-8B-Instruct tokenizer_config.json",
                     tok("llama3_1"), "<|begin_of_text|>", "<|eot_id|>"),
        "chatml": lambda: (CHATML, "plain ChatML (transformers docs example)", tok("qwen3"), None, "<|im_end|>"),
        "qwen2.5": lambda: (jinja("qwen2.5-7b-instruct.jinja"), "Qwen/Qwen2.5-7B-Instruct tokenizer_config.json",
                    tok("qwen3"), None, "<|im_end|>"),
        "qwen3": lambda: (cfg("qwen3"), "shared/tokenizers/qwen3/tokenizer_config.json", tok("qwen3"), None, "<|im_end|>"),
        "gemma3": lambda: (cfg("gemma3"), "shared/tokenizers/gemma3/tokenizer_config.json", tok("gemma3"), "<bos>",
                   "<end_of_turn>"),
        "mistral": lambda: (jinja("mistral-7b-instruct-v0.3.jinja"),
                    "mistralai/Mistral-7B-Instruct-v0.3 tokenizer_config.json", tok("llama2"), "<s>", "</s>"),
        "phi3": lambda: public("phi3", "qwen3", None, "<|endoftext|>"),
        "phi3.5": lambda: public("phi3.5", "qwen3", None, "<|endoftext|>"),
        "phi4-mini": lambda: public("phi4-mini", "qwen3", None, "<|endoftext|>"),
        "olmo2": lambda: public("olmo2", "qwen3", "<|endoftext|>", "<|endoftext|>"),
        "llama2": lambda: public("llama2", "llama2", "<s>", "</s>"),
        "mistral-nemo": lambda: public("mistral-nemo", "llama2", "<s>", "</s>"),
    }


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--shared", default=os.path.join(here, "..", "..", "shared"))
    ap.add_argument("--templates", default="/work/templates", help="folder with the .jinja files named above")
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "templates"))
    ap.add_argument("--only", default="", help="comma-separated template names (default: all)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    import transformers
    table = templates(a.shared, a.templates)
    names = [n for n in a.only.split(",") if n] or list(table)
    for n in names:
        if n not in table:
            raise SystemExit("unknown template %s (known: %s)" % (n, ", ".join(table)))
    for name in names:
        tpl, source, tokfile, bos, eos = table[name]()
        tk = PreTrainedTokenizerFast(tokenizer_file=tokfile, bos_token=bos, eos_token=eos)
        tk.chat_template = tpl
        cases = []
        for cname, msgs in CASES:
            case = {"name": cname, "messages": msgs}
            try:
                case["text"] = tk.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
            except Exception as e:  # the template raised (e.g. roles must alternate)
                case["error"] = str(e)
            # the prompt that asks for the last answer: the conversation
            # without its final assistant turn, add_generation_prompt=True
            k = len(msgs) - 1 if msgs[-1]["role"] == "assistant" else len(msgs)
            if k > 0:
                case["prompt_messages"] = k
                try:
                    case["prompt_text"] = tk.apply_chat_template(msgs[:k], tokenize=False, add_generation_prompt=True)
                except Exception as e:
                    case["prompt_error"] = str(e)
            cases.append(case)
        doc = {"template": name, "source": source, "bos_token": bos or "", "eos_token": eos,
               "generator": "tools/gen_template_fixtures.py, transformers %s apply_chat_template" % transformers.__version__,
               "cases": cases}
        path = os.path.join(a.out, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print("wrote", path, sum("text" in c for c in cases), "rendered,", sum("error" in c for c in cases), "errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
