#pragma once
// Model outputs (an export or conversion directory, a .gguf file) that are either complete or
// absent, whenever the writing process dies (kill -9, out of memory, power loss). Everything is
// written under a sibling name, <out>.partial-<pid>[-<random>], fsynced, and renamed onto <out>
// only at the end: a rename within one directory is atomic, and the fsyncs before it make sure
// that after a power loss the new name never points at data that was still in the page cache.
// The pid in the name lets the next run tell a leftover of a dead run (removed, with a message)
// from a run that is still writing the same output (refused).
#include <filesystem>

namespace nibble {

// The sibling to write a single file into before renaming it onto `target`.
std::filesystem::path partial_file_path(const std::filesystem::path& target);

// Removes <out>.partial-<pid>* and <out>.replaced-<pid> left by runs that no longer exist,
// naming each on stderr. Throws nibble::Error when one belongs to a live nibble process.
void remove_stale_partials(const std::filesystem::path& out);

// fsync of a file or a directory (a directory's fsync makes the names in it durable).
void fsync_path(const std::filesystem::path& path);

// An output directory built at path() and renamed onto `out` by commit().
class AtomicOutputDirectory {
 public:
  // Refuses an existing `out` unless `replace`, removes stale partials of `out`, and creates the
  // empty partial directory.
  AtomicOutputDirectory(std::filesystem::path out, bool replace);
  ~AtomicOutputDirectory();  // removes the partial directory unless commit() succeeded
  AtomicOutputDirectory(const AtomicOutputDirectory&) = delete;
  AtomicOutputDirectory& operator=(const AtomicOutputDirectory&) = delete;

  const std::filesystem::path& path() const { return partial_; }
  // Fsyncs every file and the directory, moves an existing `out` aside to <out>.replaced-<pid>
  // (so that no moment sees a half-deleted old model under `out`), renames the partial directory
  // onto `out`, fsyncs the parent directory, and only then deletes the old output.
  void commit();

 private:
  std::filesystem::path out_;
  std::filesystem::path partial_;
  bool replace_ = false;
  bool committed_ = false;
};

}  // namespace nibble
