// AtomicOutputDirectory and the leftover rules of core/atomic_output.h. The
// kill -9 behaviour of the real writers is tested end to end in
// tests/python/test_export_kill.py.
#include "core/atomic_output.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;

class AtomicOutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("nibble_atomic_output_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(root_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  static void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }
  static std::string read(const fs::path& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path root_;
};

TEST_F(AtomicOutputTest, CommitRenamesThePartialDirectory) {
  const fs::path out = root_ / "model";
  {
    AtomicOutputDirectory dir(out, false);
    EXPECT_EQ(dir.path().filename(), "model.partial-" + std::to_string(::getpid()));
    write(dir.path() / "config.json", "{}");
    EXPECT_FALSE(fs::exists(out));
    dir.commit();
  }
  EXPECT_EQ(read(out / "config.json"), "{}");
  EXPECT_EQ(names(), std::vector<std::string>{"model"});
}

TEST_F(AtomicOutputTest, AbandonedOutputLeavesNothing) {
  { AtomicOutputDirectory dir(root_ / "model", false); }
  EXPECT_TRUE(names().empty());
}

TEST_F(AtomicOutputTest, ExistingOutputNeedsReplaceAndIsSwappedWhole) {
  const fs::path out = root_ / "model";
  fs::create_directories(out);
  write(out / "old.txt", "old");
  EXPECT_THROW(AtomicOutputDirectory(out, false), Error);
  AtomicOutputDirectory dir(out, true);
  write(dir.path() / "new.txt", "new");
  EXPECT_EQ(read(out / "old.txt"), "old");  // untouched until commit
  dir.commit();
  EXPECT_FALSE(fs::exists(out / "old.txt"));
  EXPECT_EQ(read(out / "new.txt"), "new");
  EXPECT_EQ(names(), std::vector<std::string>{"model"});
}

TEST_F(AtomicOutputTest, LeftoversOfDeadRunsAreRemovedOthersKept) {
  // 999999999 is above Linux's largest pid (2^22), so no process has it.
  fs::create_directories(root_ / "model.partial-999999999");
  write(root_ / "model.partial-999999999" / "model.safetensors", "half");
  fs::create_directories(root_ / "model.replaced-999999999");
  write(root_ / "model.gguf.partial-999999999-0badf00d", "half");
  write(root_ / "model.partial-notapid", "kept");
  write(root_ / "model2.partial-999999999", "kept");
  remove_stale_partials(root_ / "model");
  remove_stale_partials(root_ / "model.gguf");
  EXPECT_EQ(names(),
            (std::vector<std::string>{"model.partial-notapid", "model2.partial-999999999"}));
}

TEST_F(AtomicOutputTest, PartialFileNameCarriesThePid) {
  const std::string name = partial_file_path(root_ / "model.gguf").filename().string();
  EXPECT_EQ(name.rfind("model.gguf.partial-" + std::to_string(::getpid()) + "-", 0), 0u) << name;
}

}  // namespace
}  // namespace nibble
