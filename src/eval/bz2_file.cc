#include "eval/bz2_file.h"

#include <bzlib.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/mapped_file.h"

namespace nibble::eval {

std::string read_bz2_file(const std::filesystem::path& path, size_t max_bytes) {
  const auto file = MappedFile::open(path);
  bz_stream stream{};
  NIBBLE_CHECK(BZ2_bzDecompressInit(&stream, 0, 0) == BZ_OK, "{}: cannot start bzip2 decoder",
               path.string());
  std::string out;
  char buffer[1 << 16];
  // bzlib takes a non-const pointer but never writes through next_in.
  stream.next_in = const_cast<char*>(reinterpret_cast<const char*>(file->data()));
  stream.avail_in = 0;
  size_t consumed = 0;
  int status = BZ_OK;
  while (true) {
    if (stream.avail_in == 0 && consumed < file->size()) {
      // avail_in is 32-bit: feed large files in pieces.
      const size_t piece = std::min<size_t>(file->size() - consumed, size_t(1) << 30);
      stream.next_in = const_cast<char*>(reinterpret_cast<const char*>(file->data() + consumed));
      stream.avail_in = unsigned(piece);
      consumed += piece;
    }
    stream.next_out = buffer;
    stream.avail_out = sizeof buffer;
    status = BZ2_bzDecompress(&stream);
    out.append(buffer, sizeof buffer - stream.avail_out);
    if (status == BZ_STREAM_END) {
      // A .bz2 file may hold several concatenated streams (pbzip2 writes them).
      if (stream.avail_in == 0 && consumed == file->size()) break;
      char* rest = stream.next_in;
      const unsigned rest_n = stream.avail_in;
      BZ2_bzDecompressEnd(&stream);
      stream = bz_stream{};
      BZ2_bzDecompressInit(&stream, 0, 0);
      stream.next_in = rest;
      stream.avail_in = rest_n;
      continue;
    }
    if (status != BZ_OK || out.size() > max_bytes ||
        (stream.avail_in == 0 && consumed == file->size() && stream.avail_out != 0)) {
      BZ2_bzDecompressEnd(&stream);
      if (out.size() > max_bytes)
        fail("{}: unpacks to more than {} bytes", path.string(), max_bytes);
      fail("{}: corrupt or truncated bzip2 data (bzlib status {})", path.string(), status);
    }
  }
  BZ2_bzDecompressEnd(&stream);
  return out;
}

std::string read_text_file(const std::filesystem::path& path) {
  if (path.extension() == ".bz2") return read_bz2_file(path);
  std::ifstream in(path, std::ios::binary);
  NIBBLE_CHECK(in.good(), "{}: cannot open", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace nibble::eval
