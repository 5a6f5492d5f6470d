// tokenize_tool: runs Tessera's tokenizer from a GGUF file over stdin, one case per line, for
// the Python test that compares it with Hugging Face `tokenizers`.
//
//   tokenize_tool MODEL.gguf encode [--add-special] [--parse-special]
//       each line: hex of the text's bytes   ->  the ids, space-separated
//   tokenize_tool MODEL.gguf decode [--render-special]
//       each line: ids, space-separated      ->  hex of Decode(ids)
//   tokenize_tool MODEL.gguf chat
//       each line: messages, ','-separated, each ROLEHEX:CONTENTHEX  ->  hex of the rendered
//       ChatTemplate (tokenizer.chat_template) with the generation prompt
//   tokenize_tool MODEL.gguf stream [--render-special]
//       each line: ids, space-separated      ->  hex of each Detokenizer::Next() piece, then
//                                                of Flush(), space-separated ('-' for empty)
//
// Text travels as hex so that any bytes (newlines included) fit on one line. Exit status 0 on
// success, 1 on any error, with the reason on stderr.
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "model/chat_template.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

namespace {

using tessera::Tokenizer;

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream in(line);
  long long id = 0;
  while (in >> id) ids.push_back(static_cast<int32_t>(id));
  if (!in.eof()) return absl::InvalidArgumentError(absl::StrCat("bad id list: '", line, "'"));
  return ids;
}

std::string Hex(const std::string& bytes) {
  return bytes.empty() ? "-" : absl::BytesToHexString(bytes);
}

absl::Status Run(int argc, char** argv) {
  if (argc < 3) {
    return absl::InvalidArgumentError(
        "usage: tokenize_tool MODEL.gguf encode|decode|stream [--add-special] "
        "[--parse-special] [--render-special]");
  }
  const std::string mode = argv[2];
  bool add_special = false, parse_special = false, render_special = false;
  for (int i = 3; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--add-special") {
      add_special = true;
    } else if (flag == "--parse-special") {
      parse_special = true;
    } else if (flag == "--render-special") {
      render_special = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '", flag, "'"));
    }
  }
  auto file = tessera::GgufFile::Open(argv[1]);
  if (!file.ok()) return file.status();
  auto tokenizer = Tokenizer::FromGguf(**file);
  if (!tokenizer.ok()) return tokenizer.status();
  const Tokenizer& tok = **tokenizer;

  std::optional<tessera::ChatTemplate> chat;
  if (mode == "chat") {
    auto t = tessera::ChatTemplate::FromGguf(**file);
    if (!t.ok()) return t.status();
    chat = *t;
  }

  std::string line;
  while (std::getline(std::cin, line)) {
    if (mode == "encode") {
      const std::string text = absl::HexStringToBytes(line);
      auto ids = tok.Encode(text, add_special, parse_special);
      if (!ids.ok()) return ids.status();
      std::cout << absl::StrJoin(*ids, " ") << "\n";
    } else if (mode == "chat") {
      std::vector<tessera::ChatMessage> messages;
      for (absl::string_view m : absl::StrSplit(line, ',', absl::SkipEmpty())) {
        const std::pair<std::string, std::string> rc = absl::StrSplit(m, absl::MaxSplits(':', 1));
        messages.push_back({absl::HexStringToBytes(rc.first), absl::HexStringToBytes(rc.second)});
      }
      auto text = chat->Render(messages, /*add_generation_prompt=*/true);
      if (!text.ok()) return text.status();
      std::cout << absl::BytesToHexString(*text) << "\n";
    } else if (mode == "decode" || mode == "stream") {
      auto ids = ParseIds(line);
      if (!ids.ok()) return ids.status();
      if (mode == "decode") {
        auto text = tok.Decode(*ids, render_special);
        if (!text.ok()) return text.status();
        std::cout << absl::BytesToHexString(*text) << "\n";
      } else {
        tessera::Detokenizer detok(tok, render_special);
        std::vector<std::string> pieces;
        for (int32_t id : *ids) {
          auto piece = detok.Next(id);
          if (!piece.ok()) return piece.status();
          pieces.push_back(Hex(*piece));
        }
        pieces.push_back(Hex(detok.Flush()));
        std::cout << absl::StrJoin(pieces, " ") << "\n";
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown mode '", mode, "'"));
    }
  }
  std::cout.flush();
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  const absl::Status status = Run(argc, argv);
  if (!status.ok()) {
    std::fprintf(stderr, "tokenize_tool: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
