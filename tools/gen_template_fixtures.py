#!/usr/bin/env python3
"""Generate tests/fixtures/templates/*.json: conversations and the text that
transformers' apply_chat_template renders for them (tokenize=False,
add_generation_prompt=False), for every chat template luxtrain builds in.

Run with the generator venv (tools/requirements-gen.txt):
    tools/gen_fixtures.sh run tools/gen_template_fixtures.py \
        --shared ../shared --templates /path/to/jinja-folder

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
           chat_template (2507 bytes), from public copies
  mistral  --templates/mistral-7b-instruct-v0.3.jinja: the chat_template of
           mistralai/Mistral-7B-Instruct-v0.3's tokenizer_config.json (the
           "v3" tool-aware template, 3959 bytes), from public copies
  chatml   the plain ChatML template written below (the example template of
           the transformers chat-templating docs)
None of these template files are committed; only the rendered fixtures are.
"""
import argparse
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
]

# name -> (template source, tokenizer.json used to build the tokenizer, bos, eos)
def templates(shared, tdir):
    def cfg(folder):
        with open(os.path.join(shared, "tokenizers", folder, "tokenizer_config.json"), encoding="utf-8") as f:
            return json.load(f)["chat_template"]

    def jinja(name):
        with open(os.path.join(tdir, name), encoding="utf-8") as f:
            return f.read()

    tok = lambda folder: os.path.join(shared, "tokenizers", folder, "tokenizer.json")
    return {
        "llama3": (cfg("llama3_1"), "shared/tokenizers/llama3_1/tokenizer_config.json", tok("llama3_1"),
                   "<|begin_of_text|>", "<|eot_id|>"),
        "llama3.1": (jinja("llama-3.1-8b-instruct.jinja"), "meta-llama/Llama-3.1-8B-Instruct tokenizer_config.json",
                     tok("llama3_1"), "<|begin_of_text|>", "<|eot_id|>"),
        "chatml": (CHATML, "plain ChatML (transformers docs example)", tok("qwen3"), None, "<|im_end|>"),
        "qwen2.5": (jinja("qwen2.5-7b-instruct.jinja"), "Qwen/Qwen2.5-7B-Instruct tokenizer_config.json",
                    tok("qwen3"), None, "<|im_end|>"),
        "qwen3": (cfg("qwen3"), "shared/tokenizers/qwen3/tokenizer_config.json", tok("qwen3"), None, "<|im_end|>"),
        "gemma3": (cfg("gemma3"), "shared/tokenizers/gemma3/tokenizer_config.json", tok("gemma3"), "<bos>",
                   "<end_of_turn>"),
        "mistral": (jinja("mistral-7b-instruct-v0.3.jinja"),
                    "mistralai/Mistral-7B-Instruct-v0.3 tokenizer_config.json", tok("llama2"), "<s>", "</s>"),
    }


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--shared", default=os.path.join(here, "..", "..", "shared"))
    ap.add_argument("--templates", default="/work/templates", help="folder with the .jinja files named above")
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "templates"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    import transformers
    for name, (tpl, source, tokfile, bos, eos) in templates(a.shared, a.templates).items():
        tk = PreTrainedTokenizerFast(tokenizer_file=tokfile, bos_token=bos, eos_token=eos)
        tk.chat_template = tpl
        cases = []
        for cname, msgs in CASES:
            case = {"name": cname, "messages": msgs}
            try:
                case["text"] = tk.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
            except Exception as e:  # the template raised (e.g. roles must alternate)
                case["error"] = str(e)
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
