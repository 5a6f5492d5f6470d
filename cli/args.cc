#include "cli/args.h"

#include <cctype>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tessera::cli {

absl::StatusOr<std::optional<KvType>> ParseKvType(const std::string& name) {
  if (name == "auto") return std::optional<KvType>();
  if (name == "f16") return std::optional<KvType>(KvType::kF16);
  if (name == "f32") return std::optional<KvType>(KvType::kF32);
  return absl::InvalidArgumentError("--kv-type must be auto, f16 or f32, got '" + name + "'");
}

void Args::Flag(const char* name, const char* short_name, bool* value, const char* help) {
  opts_.push_back({name, short_name ? short_name : "", help, Kind::kFlag, value});
}
void Args::Option(const char* name, const char* short_name, std::string* value,
                  const char* help) {
  opts_.push_back({name, short_name ? short_name : "", help, Kind::kString, value});
}
void Args::Option(const char* name, const char* short_name, int64_t* value, const char* help) {
  opts_.push_back({name, short_name ? short_name : "", help, Kind::kInt, value});
}
void Args::Option(const char* name, const char* short_name, double* value, const char* help) {
  opts_.push_back({name, short_name ? short_name : "", help, Kind::kDouble, value});
}
void Args::Option(const char* name, const char* short_name, std::vector<std::string>* value,
                  const char* help) {
  opts_.push_back({name, short_name ? short_name : "", help, Kind::kStrings, value});
}
void Args::Positional(const char* name, std::string* value, const char* help, bool required) {
  positional_.push_back({name, help, value, required});
}

Args::Opt* Args::Find(const std::string& arg) {
  for (Opt& o : opts_) {
    if (arg == "--" + o.name || (!o.short_name.empty() && arg == "-" + o.short_name)) return &o;
  }
  return nullptr;
}

bool Args::seen(const char* name) const {
  for (const Opt& o : opts_) {
    if (o.name == name) return o.seen;
  }
  return false;
}

absl::Status Args::Parse(int argc, char** argv) {
  size_t next_positional = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      return absl::OkStatus();
    }
    if (arg.size() > 1 && arg[0] == '-' && !(arg.size() > 1 && std::isdigit(arg[1]))) {
      std::string inline_value;
      bool has_inline = false;
      if (const size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
        inline_value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_inline = true;
      }
      Opt* o = Find(arg);
      if (o == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown option ", arg));
      o->seen = true;
      if (o->kind == Kind::kFlag) {
        *static_cast<bool*>(o->value) = true;
        continue;
      }
      if (!has_inline) {
        if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
        inline_value = argv[++i];
      }
      const std::string& v = inline_value;
      switch (o->kind) {
        case Kind::kString:
          *static_cast<std::string*>(o->value) = v;
          break;
        case Kind::kStrings:
          static_cast<std::vector<std::string>*>(o->value)->push_back(v);
          break;
        case Kind::kInt:
          if (!absl::SimpleAtoi(v, static_cast<int64_t*>(o->value))) {
            return absl::InvalidArgumentError(
                absl::StrCat(arg, " expects an integer, got '", v, "'"));
          }
          break;
        case Kind::kDouble:
          if (!absl::SimpleAtod(v, static_cast<double*>(o->value))) {
            return absl::InvalidArgumentError(absl::StrCat(arg, " expects a number, got '", v, "'"));
          }
          break;
        case Kind::kFlag:
          break;
      }
      continue;
    }
    if (next_positional >= positional_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    *positional_[next_positional++].value = arg;
  }
  for (size_t p = next_positional; p < positional_.size(); ++p) {
    if (positional_[p].required) {
      return absl::InvalidArgumentError(absl::StrCat("missing ", positional_[p].name));
    }
  }
  return absl::OkStatus();
}

std::string Args::Usage() const {
  std::string u = absl::StrCat("usage: tessera ", command_);
  for (const Pos& p : positional_) {
    absl::StrAppend(&u, p.required ? " " : " [", p.name, p.required ? "" : "]");
  }
  absl::StrAppend(&u, " [options]\n\n", summary_, "\n\n");
  for (const Pos& p : positional_) absl::StrAppend(&u, "  ", p.name, "\n      ", p.help, "\n");
  for (const Opt& o : opts_) {
    std::string names = o.short_name.empty() ? "" : absl::StrCat("-", o.short_name, ", ");
    absl::StrAppend(&names, "--", o.name);
    if (o.kind != Kind::kFlag) absl::StrAppend(&names, " VALUE");
    absl::StrAppend(&u, "  ", names, "\n      ", o.help, "\n");
  }
  return u;
}

bool ParseOrExit(Args& args, int argc, char** argv, int* exit_code) {
  const absl::Status s = args.Parse(argc, argv);
  if (!s.ok()) {
    std::fprintf(stderr, "tessera: %s\n\n%s", std::string(s.message()).c_str(),
                 args.Usage().c_str());
    *exit_code = 2;
    return false;
  }
  if (args.help_requested()) {
    std::fputs(args.Usage().c_str(), stdout);
    *exit_code = 0;
    return false;
  }
  return true;
}

}  // namespace tessera::cli
