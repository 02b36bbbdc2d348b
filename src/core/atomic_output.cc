#include "core/atomic_output.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <system_error>

#include "core/error.h"

namespace fs = std::filesystem;

namespace nibble {
namespace {

constexpr std::string_view kPartialTag = ".partial-";
constexpr std::string_view kReplacedTag = ".replaced-";

fs::path sibling(const fs::path& out, std::string_view tag, std::string_view suffix = {}) {
  fs::path p = out;
  p += std::string(tag) + std::to_string(::getpid()) + std::string(suffix);
  return p;
}

// The pid of a leftover named <out_name><tag><pid>[-...], if `name` is one.
std::optional<pid_t> leftover_pid(const std::string& name, const std::string& out_name) {
  for (std::string_view tag : {kPartialTag, kReplacedTag}) {
    const std::string prefix = out_name + std::string(tag);
    if (!name.starts_with(prefix)) continue;
    std::string_view rest = std::string_view(name).substr(prefix.size());
    const size_t digits = rest.find_first_not_of("0123456789");
    const std::string_view number = rest.substr(0, digits);
    if (number.empty() || number.size() > 9) return std::nullopt;
    if (digits != std::string_view::npos && rest[digits] != '-') return std::nullopt;
    return static_cast<pid_t>(std::stol(std::string(number)));
  }
  return std::nullopt;
}

// A recycled pid may belong to an unrelated program: only another process running this same
// executable counts as a writer still at work.
bool is_live_writer(pid_t pid) {
  if (pid == ::getpid()) return false;
  if (::kill(pid, 0) != 0 && errno != EPERM) return false;
  std::error_code a, b;
  const fs::path theirs = fs::read_symlink(fs::path("/proc") / std::to_string(pid) / "exe", a);
  const fs::path mine = fs::read_symlink("/proc/self/exe", b);
  if (a || b) return true;  // cannot tell: do not delete what may be in use
  return theirs == mine;
}

}  // namespace

fs::path partial_file_path(const fs::path& target) {
  std::random_device rd;
  return sibling(target, kPartialTag, fmt::format("-{:08x}", rd()));
}

void remove_stale_partials(const fs::path& out) {
  const fs::path parent = out.parent_path().empty() ? fs::path(".") : out.parent_path();
  const std::string out_name = out.filename().string();
  std::error_code ec;
  fs::directory_iterator it(parent, ec);
  if (ec) return;  // no parent yet: nothing left over
  for (const auto& entry : it) {
    const std::string name = entry.path().filename().string();
    const auto pid = leftover_pid(name, out_name);
    if (!pid) continue;
    if (is_live_writer(*pid))
      fail("{}: process {} is still writing this output ({}); wait for it or stop it", out.string(),
           *pid, entry.path().string());
    std::fprintf(stderr, "%s: removing the leftover of an interrupted run: %s\n",
                 out.string().c_str(), entry.path().string().c_str());
    fs::remove_all(entry.path(), ec);
    if (ec) fail("{}: cannot remove the leftover {}: {}", out.string(), name, ec.message());
  }
}

void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open to sync: {}", path.string(), std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems cannot fsync a directory (EINVAL); the rename is still atomic there.
  if (rc != 0 && err != EINVAL) fail("{}: fsync failed: {}", path.string(), std::strerror(err));
}

AtomicOutputDirectory::AtomicOutputDirectory(fs::path out, bool replace)
    : out_(std::move(out)), replace_(replace) {
  NIBBLE_CHECK(!out_.filename().empty(), "{}: output path names no directory", out_.string());
  std::error_code ec;
  if (fs::exists(out_, ec) && !replace_)
    fail("{}: already exists (pass --force to replace it)", out_.string());
  remove_stale_partials(out_);
  partial_ = sibling(out_, kPartialTag);
  fs::remove_all(partial_, ec);
  fs::create_directories(partial_, ec);
  if (ec) fail("{}: cannot create directory: {}", partial_.string(), ec.message());
}

AtomicOutputDirectory::~AtomicOutputDirectory() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(partial_, ec);
}

void AtomicOutputDirectory::commit() {
  for (const auto& entry : fs::recursive_directory_iterator(partial_))
    if (entry.is_regular_file()) fsync_path(entry.path());
  fsync_path(partial_);
  std::error_code ec;
  const fs::path replaced = sibling(out_, kReplacedTag);
  bool moved_aside = false;
  if (fs::exists(fs::symlink_status(out_, ec))) {
    NIBBLE_CHECK(replace_, "{}: appeared while writing (pass --force to replace it)",
                 out_.string());
    fs::rename(out_, replaced, ec);
    if (ec) fail("{}: cannot move the old output aside: {}", out_.string(), ec.message());
    moved_aside = true;
  }
  fs::rename(partial_, out_, ec);
  if (ec)
    fail("{}: cannot rename {} into place: {}", out_.string(), partial_.string(), ec.message());
  committed_ = true;
  const fs::path parent = out_.parent_path().empty() ? fs::path(".") : out_.parent_path();
  fsync_path(parent);
  if (moved_aside) fs::remove_all(replaced, ec);
}

}  // namespace nibble
