// Tests for the safetensors reader and writer: round trips, the exact byte
// layout, and a table of malformed files that must all fail cleanly.
#include <bnforge/state_dict.h>

#include <gtest/gtest.h>

#include "test_util.h"

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

namespace bnforge {
namespace {

using Shape = std::vector<int64_t>;

std::string temp_path(const std::string& name) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return ::testing::TempDir() + "bnforge_" + info->test_suite_name() + "_" + info->name() + "_" + name;
}

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << path;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string le64(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
}

// A file whose header is `json` verbatim followed by `data_bytes` bytes.
std::string file_bytes(const std::string& json, size_t data_bytes) {
    return le64(json.size()) + json + std::string(data_bytes, '\x01');
}

template <class T> std::string raw_bytes(const std::vector<T>& values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

Tensor tensor_from(const std::vector<double>& values, Shape shape, DType dtype, Layout layout = Layout::NCHW) {
    Tensor t = Tensor::empty(shape, dtype, Device::cpu(), layout);
    // Fill in logical row-major order whatever the memory layout.
    Tensor logical = Tensor::empty(shape, DType::Float32);
    for (size_t i = 0; i < values.size(); ++i) logical.data<float>()[i] = static_cast<float>(values[i]);
    t.copy_(logical);
    return t;
}



// ---- round trips ---------------------------------------------------------------

TEST(Safetensors, RoundTripsEveryDtypeAndShape) {
    const std::string path = temp_path("rt.safetensors");
    StateDict sd;
    sd["f32"] = tensor_from({1.5, -2, 3.25, 0, 1e-3, 7}, {2, 3}, DType::Float32);
    sd["f16"] = tensor_from({0.5, -1, 2, 65504}, {4}, DType::Float16);
    sd["bf16"] = tensor_from({1, -0.5, 256, 3.140625}, {2, 2}, DType::BFloat16);
    sd["i64"] = tensor_from({}, {}, DType::Int64);
    sd["i64"].data<int64_t>()[0] = (int64_t{1} << 60) + 3;  // beyond float precision on purpose
    sd["per_channel"] = tensor_from({1, 2, 3}, {1, 3, 1, 1}, DType::Float32);
    sd["nhwc"] = tensor_from({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {1, 3, 2, 2}, DType::Float32, Layout::NHWC);
    sd["empty"] = Tensor::empty({0, 3}, DType::Float16);
    sd["u8"] = tensor_from({0, 7, 255}, {3}, DType::UInt8);
    save_safetensors(path, sd);

    const StateDict back = load_safetensors(path);
    ASSERT_EQ(back.size(), sd.size());
    for (const auto& [name, original] : sd) {
        SCOPED_TRACE(name);
        const Tensor& t = back.at(name);
        EXPECT_EQ(t.dtype(), original.dtype());
        EXPECT_EQ(t.shape(), original.shape());
        EXPECT_EQ(t.layout(), Layout::NCHW);
        EXPECT_EQ(t.strides(), contiguous_strides(t.shape(), Layout::NCHW));
        EXPECT_TRUE(t.device().is_cpu());
        EXPECT_FALSE(t.same_storage(original));
        if (t.dtype() != DType::Int64) {
            EXPECT_EQ(testutil::values(t), testutil::values(original));
        }
    }
    EXPECT_EQ(back.at("i64").data<int64_t>()[0], (int64_t{1} << 60) + 3);
    EXPECT_EQ(back.at("nhwc").item({0, 1, 0, 1}), 5.0);
}

TEST(Safetensors, WritesStridedTensorsInLogicalOrder) {
    const std::string path = temp_path("nhwc.safetensors");
    Tensor nhwc = tensor_from({0, 1, 2, 3, 4, 5, 6, 7}, {1, 2, 2, 2}, DType::Float32, Layout::NHWC);
    ASSERT_EQ(nhwc.data<float>()[1], 4.0f);  // memory order really is channels-last
    std::vector<float> buf = {0, 9, 1, 9, 2, 9};
    Tensor every_other = Tensor::from_blob_strided(buf.data(), {3}, {2}, DType::Float32, Device::cpu());
    save_safetensors(path, {{"a", nhwc}, {"b", every_other}});

    const std::string bytes = read_file(path);
    uint64_t header_size = 0;
    std::memcpy(&header_size, bytes.data(), 8);
    const std::string data = bytes.substr(8 + header_size);
    EXPECT_EQ(data, raw_bytes(std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2}));
}

TEST(Safetensors, MetadataRoundTrips) {
    const std::string path = temp_path("meta.safetensors");
    const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\""}};
    save_safetensors(path, {{"w", tensor_from({1}, {1}, DType::Float32)}}, metadata);
    EXPECT_EQ(load_safetensors_metadata(path), metadata);
    EXPECT_EQ(load_safetensors(path).size(), 1u);

    const std::string plain = temp_path("plain.safetensors");
    save_safetensors(plain, {{"w", tensor_from({1}, {1}, DType::Float32)}});
    EXPECT_TRUE(load_safetensors_metadata(plain).empty());
    EXPECT_EQ(read_file(plain).find("__metadata__"), std::string::npos);
}

TEST(Safetensors, EmptyStateDict) {
    const std::string path = temp_path("empty.safetensors");
    save_safetensors(path, {});
    EXPECT_EQ(read_file(path), le64(8) + "{}      ");
    EXPECT_TRUE(load_safetensors(path).empty());
}

TEST(Safetensors, ByteExactLayout) {
    const std::string path = temp_path("exact.safetensors");
    StateDict sd;
    sd["b"] = tensor_from({1, 2}, {2}, DType::Float32);
    sd["a"] = tensor_from({}, {}, DType::Int64);
    sd["a"].data<int64_t>()[0] = 5;
    save_safetensors(path, sd);

    // Sorted by name, offsets dense in that order, keys in sorted order,
    // padded with spaces so the data region starts 8-byte aligned.
    std::string json =
        R"({"a":{"data_offsets":[0,8],"dtype":"I64","shape":[]},)"
        R"("b":{"data_offsets":[8,16],"dtype":"F32","shape":[2]}})";
    json.append((8 - json.size() % 8) % 8, ' ');
    ASSERT_EQ(json.size() % 8, 0u);
    const std::string expected = le64(json.size()) + json + raw_bytes(std::vector<int64_t>{5}) +
                                 raw_bytes(std::vector<float>{1, 2});
    const std::string actual = read_file(path);
    EXPECT_EQ(actual, expected);
    ASSERT_GE(actual.size(), 8u);
    EXPECT_EQ(static_cast<unsigned char>(actual[0]), json.size());  // little-endian length
    EXPECT_EQ(actual.substr(1, 7), std::string(7, '\0'));
}

TEST(Safetensors, AcceptsFilesFromOtherWriters) {
    // Unpadded header, tensors stored out of name order, zero-size tensor in
    // the middle, extra unknown fields ignored.
    const std::string path = temp_path("foreign.safetensors");
    const std::string json =
        R"({"z":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},)"
        R"("e":{"dtype":"F32","shape":[0,5],"data_offsets":[4,4],"extra":true},)"
        R"("a":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]}})";
    std::string bytes = le64(json.size()) + json;
    bytes += raw_bytes(std::vector<uint16_t>{0x3C00, 0xC000, 0x3F80});
    write_file(path, bytes);
    const StateDict sd = load_safetensors(path);
    ASSERT_EQ(sd.size(), 3u);
    EXPECT_EQ(sd.at("z").item({1}), -2.0);
    EXPECT_EQ(sd.at("a").item({0}), 1.0);
    EXPECT_EQ(sd.at("e").shape(), (Shape{0, 5}));
}

TEST(Safetensors, SaveErrors) {
    const std::string dir = temp_path("no_such_dir");
    EXPECT_ERROR_CONTAINS(save_safetensors(dir + "/x.safetensors", {{"a", tensor_from({1}, {1}, DType::Float32)}}),
                          "save_safetensors: '" + dir + "/x.safetensors': cannot open for writing");
    const std::string path = temp_path("bad.safetensors");
    EXPECT_ERROR_CONTAINS(save_safetensors(path, {{"a", Tensor()}}), "tensor 'a' is undefined");
    EXPECT_ERROR_CONTAINS(save_safetensors(path, {{"__metadata__", tensor_from({1}, {1}, DType::Float32)}}),
                          "tensor name '__metadata__' is reserved");
    EXPECT_ERROR_CONTAINS(save_safetensors(path, {{"bad\xff", tensor_from({1}, {1}, DType::Float32)}}),
                          "tensor name is not valid UTF-8");
    EXPECT_ERROR_CONTAINS(save_safetensors(path, {}, {{"k", "\xc3"}}), "metadata value for 'k' is not valid UTF-8");
    // Validation happens before the file is created.
    EXPECT_TRUE(read_file(path).empty());
}

TEST(Safetensors, LoadIoErrors) {
    const std::string missing = temp_path("missing.safetensors");
    EXPECT_ERROR_CONTAINS(load_safetensors(missing), "load_safetensors: '" + missing + "': cannot open for reading");
    EXPECT_ERROR_CONTAINS(load_safetensors_metadata(missing), "load_safetensors_metadata: '" + missing + "'");
    EXPECT_THROW(load_safetensors(::testing::TempDir()), Error);  // a directory
}

// ---- hostile files ---------------------------------------------------------------

struct Corrupt {
    const char* name;
    std::string bytes;
    const char* message;  // a fragment the error must contain
};

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
    return "\"" + name + "\":{\"dtype\":" + dtype + ",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}

std::vector<Corrupt> corrupt_files() {
    const std::string a = entry("a", "\"F32\"", "[2]", "[0,8]");
    auto one = [](const std::string& e) { return "{" + e + "}"; };
    auto just_a = [&](const std::string& dtype, const std::string& shape, const std::string& offsets, size_t data) {
        return file_bytes(one(entry("a", dtype, shape, offsets)), data);
    };
    std::string deep(100000, '[');
    deep += std::string(100000, ']');
    return {
        {"empty file", "", "0 bytes, too short for the 8-byte header length"},
        {"seven bytes", std::string(7, '\0'), "7 bytes, too short"},
        {"header longer than file", le64(1000) + "{}", "header length 1000 exceeds the 2 bytes that follow"},
        {"absurd header length", le64(uint64_t{1} << 63) + "{}", "exceeds the limit of 100000000 bytes"},
        {"header just over limit", le64(100000001) + "{}", "exceeds the limit"},
        {"invalid json", file_bytes("{not json", 0), "header is not valid JSON"},
        {"truncated json", file_bytes("{\"a\":{\"dtype\":", 0), "header is not valid JSON"},
        {"trailing garbage", file_bytes(one(a) + " x", 8), "header is not valid JSON"},
        {"invalid utf8", file_bytes("{\"\xff\":1}", 0), "header is not valid JSON"},
        {"array header", file_bytes("[]", 0), "header is an array, expected a JSON object"},
        {"number header", file_bytes("42", 0), "expected a JSON object"},
        {"null header", file_bytes("null", 0), "expected a JSON object"},
        {"deeply nested", file_bytes(deep, 0), "expected a JSON object"},
        {"entry not object", file_bytes("{\"a\":5}", 0), "tensor 'a': entry is number 5, expected an object"},
        {"missing dtype", file_bytes("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
         "tensor 'a': missing field \"dtype\""},
        {"missing shape", file_bytes("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8),
         "tensor 'a': missing field \"shape\""},
        {"missing offsets", file_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8),
         "tensor 'a': missing field \"data_offsets\""},
        {"dtype not string", just_a("1", "[2]", "[0,8]", 8), "tensor 'a': dtype is number 1, expected a string"},
        {"unknown dtype", just_a("\"F64\"", "[1]", "[0,8]", 8), "dtype string \"F64\" is not supported"},
        {"lowercase dtype", just_a("\"f32\"", "[2]", "[0,8]", 8), "is not supported"},
        {"shape not array", just_a("\"F32\"", "2", "[0,8]", 8), "tensor 'a': shape is number 2, expected an array"},
        {"negative shape", just_a("\"F32\"", "[-2]", "[0,8]", 8), "tensor 'a': shape[0] = -2, expected >= 0"},
        {"float shape", just_a("\"F32\"", "[2.0]", "[0,8]", 8), "shape[0] is number 2.0, expected a non-negative"},
        {"string shape", just_a("\"F32\"", "[\"2\"]", "[0,8]", 8), "shape[0] is string"},
        {"bool shape", just_a("\"F32\"", "[true]", "[0,8]", 8), "shape[0] is boolean"},
        {"nested shape", just_a("\"F32\"", "[[2]]", "[0,8]", 8), "shape[0] is an array"},
        {"huge shape", just_a("\"F32\"", "[18446744073709551615]", "[0,8]", 8), "does not fit in int64"},
        {"shape beyond uint64", just_a("\"F32\"", "[99999999999999999999]", "[0,8]", 8), "shape[0] is number"},
        {"element count overflow", just_a("\"F32\"", "[4294967296,4294967296,16]", "[0,8]", 8),
         "more elements than fit in 64 bits"},
        {"empty but huge shape", just_a("\"F32\"", "[0,4294967296,4294967296]", "[0,0]", 0),
         "more elements than fit in 64 bits"},
        {"byte size overflow", just_a("\"F32\"", "[4611686018427387904]", "[0,8]", 8), "byte size overflows"},
        {"offsets not array", just_a("\"F32\"", "[2]", "8", 8), "data_offsets is number 8, expected an array"},
        {"one offset", just_a("\"F32\"", "[2]", "[0]", 8), "data_offsets is an array of 1 entries"},
        {"three offsets", just_a("\"F32\"", "[2]", "[0,8,8]", 8), "of 3 entries"},
        {"negative offset", just_a("\"F32\"", "[2]", "[-8,0]", 8), "data_offsets[0] = -8, expected >= 0"},
        {"float offset", just_a("\"F32\"", "[2]", "[0,8.5]", 8), "data_offsets[1] is number"},
        {"offsets past data", just_a("\"F32\"", "[2]", "[0,8]", 4), "reach past the data region of 4 bytes"},
        {"offsets near uint64 max", just_a("\"F32\"", "[2]", "[18446744073709551608,18446744073709551615]", 8),
         "reach past the data region"},
        {"end before begin", just_a("\"F32\"", "[0]", "[8,0]", 8), "data_offsets [8, 0] end before begin"},
        {"size mismatch", just_a("\"F32\"", "[3]", "[0,8]", 8),
         "data_offsets [0, 8] span 8 bytes, expected 12 for shape [3] and dtype F32"},
        {"overlap", file_bytes("{" + a + "," + entry("b", "\"I64\"", "[]", "[4,12]") + "}", 12),
         "tensor 'b': data_offsets [4, 12] overlap tensor 'a'"},
        {"same range twice", file_bytes("{" + a + "," + entry("b", "\"F32\"", "[2]", "[0,8]") + "}", 8), "overlap"},
        {"hole between tensors", file_bytes("{" + a + "," + entry("b", "\"I64\"", "[]", "[16,24]") + "}", 24),
         "tensor 'b': data_offsets begin at 16, expected 8"},
        {"hole at start", just_a("\"F32\"", "[2]", "[4,12]", 12), "begin at 4, expected 0"},
        {"trailing data", file_bytes(one(a), 9), "cover 8 bytes of the data region, expected all 9"},
        {"data without tensors", file_bytes("{}", 3), "cover 0 bytes of the data region, expected all 3"},
        {"duplicate name", file_bytes("{" + a + "," + a + "}", 8), "the key 'a' more than once"},
        {"duplicate field", file_bytes("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2],"
                                       "\"data_offsets\":[0,8]}}",
                                       8),
         "the key 'dtype' more than once"},
        {"metadata not object", file_bytes("{\"__metadata__\":[1]," + a + "}", 8),
         "__metadata__ is an array, expected an object"},
        {"metadata value not string", file_bytes("{\"__metadata__\":{\"k\":1}," + a + "}", 8),
         "__metadata__ entry 'k' is number 1, expected a string"},
    };
}

TEST(SafetensorsCorrupt, EveryMalformedFileIsAnError) {
    const std::string path = temp_path("corrupt.safetensors");
    for (const Corrupt& c : corrupt_files()) {
        SCOPED_TRACE(c.name);
        write_file(path, c.bytes);
        EXPECT_ERROR_CONTAINS(load_safetensors(path), c.message);
        EXPECT_ERROR_CONTAINS(load_safetensors(path), "load_safetensors: '" + path + "': ");
        EXPECT_THROW(load_safetensors_metadata(path), Error);
    }
}

std::string valid_file_bytes(const std::string& path) {
    StateDict sd;
    sd["bias"] = tensor_from({1, 2, 3}, {3}, DType::Float16);
    sd["num_batches_tracked"] = tensor_from({4}, {}, DType::Int64);
    sd["weight"] = tensor_from({1, 2, 3}, {1, 3, 1, 1}, DType::BFloat16);
    save_safetensors(path, sd, {{"format", "pt"}});
    return read_file(path);
}

TEST(SafetensorsCorrupt, EveryTruncationIsAnError) {
    const std::string path = temp_path("trunc.safetensors");
    const std::string full = valid_file_bytes(path);
    ASSERT_GT(full.size(), 16u);
    ASSERT_EQ(load_safetensors(path).size(), 3u);
    for (size_t length = 0; length < full.size(); ++length) {
        SCOPED_TRACE("length " + std::to_string(length));
        write_file(path, full.substr(0, length));
        EXPECT_THROW(load_safetensors(path), Error);
    }
    write_file(path, full + "x");  // an extra byte belongs to no tensor
    EXPECT_ERROR_CONTAINS(load_safetensors(path), "trailing bytes");
}

// Single-byte mutations anywhere in a valid file either still parse (e.g. a
// changed data byte) or fail with bnforge::Error; nothing else may happen.
TEST(SafetensorsCorrupt, ByteMutationsNeverCrash) {
    const std::string path = temp_path("mutate.safetensors");
    const std::string full = valid_file_bytes(path);
    const char replacements[] = {'\0', '\xff', '"', '{', '[', '-', '9', ' ', ','};
    for (size_t at = 0; at < full.size(); ++at) {
        for (char r : replacements) {
            std::string mutated = full;
            mutated[at] = r;
            write_file(path, mutated);
            try {
                (void)load_safetensors(path);
            } catch (const Error&) {
            }
        }
    }
}

// ---- interoperability with the Python safetensors package ------------------------

// The contents tools/check_safetensors.py writes (and checks with --expect-known).
StateDict known_contents() {
    StateDict sd;
    sd["a_float32"] = tensor_from({1.5, -2, 3.25}, {3}, DType::Float32);
    sd["b_float16"] = tensor_from({0.5, -1, 2, 1024}, {2, 2}, DType::Float16);
    sd["c_int64"] = Tensor::empty({}, DType::Int64);
    sd["c_int64"].data<int64_t>()[0] = 7;
    return sd;
}

TEST(SafetensorsInterop, LoadsFileWrittenByPython) {
    const char* path = std::getenv("BNFORGE_PY_SAFETENSORS_FILE");
    if (!path || !*path) GTEST_SKIP() << "BNFORGE_PY_SAFETENSORS_FILE is not set";
    const StateDict sd = load_safetensors(path);
    const StateDict expected = known_contents();
    ASSERT_EQ(sd.size(), expected.size());
    for (const auto& [name, want] : expected) {
        SCOPED_TRACE(name);
        ASSERT_EQ(sd.count(name), 1u);
        const Tensor& got = sd.at(name);
        EXPECT_EQ(got.dtype(), want.dtype());
        EXPECT_EQ(got.shape(), want.shape());
        EXPECT_EQ(got.nbytes(), want.nbytes());
        EXPECT_EQ(std::memcmp(got.raw_data(), want.raw_data(), want.nbytes()), 0);
    }
    EXPECT_EQ(load_safetensors_metadata(path), (std::map<std::string, std::string>{{"format", "pt"}}));
}

// The other direction: writes the known contents (the float32 one from a
// strided view) for `check_safetensors.py read FILE --expect-known`.
TEST(SafetensorsInterop, WritesFileForPython) {
    const char* path = std::getenv("BNFORGE_CPP_SAFETENSORS_OUT");
    if (!path || !*path) GTEST_SKIP() << "BNFORGE_CPP_SAFETENSORS_OUT is not set";
    StateDict sd = known_contents();
    std::vector<float> spread = {1.5f, 0, -2, 0, 3.25f, 0};
    sd["a_float32"] = Tensor::from_blob_strided(spread.data(), {3}, {2}, DType::Float32, Device::cpu());
    save_safetensors(path, sd, {{"format", "pt"}});
    EXPECT_EQ(load_safetensors(path).size(), 3u);
}

// ---- Atomic saves (issue 15, point 1) ----

// The temporary files a save of `path` would leave beside it.
std::vector<std::string> leftover_temps(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    const std::string dir = path.substr(0, slash), prefix = path.substr(slash + 1) + ".tmp-";
    std::vector<std::string> found;
    if (DIR* d = opendir(dir.c_str())) {
        while (const dirent* e = readdir(d)) {
            if (std::string(e->d_name).rfind(prefix, 0) == 0) found.push_back(dir + "/" + e->d_name);
        }
        closedir(d);
    }
    return found;
}

StateDict large_state(float seed) {
    Tensor t = Tensor::empty({16 * 1024 * 1024}, DType::Float32);  // 64 MB: a save takes tens of ms
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); i++) p[i] = seed + static_cast<float>(i % 1000);
    return {{"big", t}};
}

// A child process killed with SIGKILL at random points of a large save leaves
// the file as it was before or as the save makes it, whole, never a mix.
TEST(SafetensorsAtomic, KilledSaveLeavesTheFileWhole) {
    const std::string path = temp_path("killed.safetensors"), reference = temp_path("reference.safetensors");
    save_safetensors(path, {{"w", tensor_from({1, 2, 3}, {3}, DType::Float32)}});
    const std::string previous = read_file(path);
    const StateDict next = large_state(7.0f);
    save_safetensors(reference, next);
    const std::string complete = read_file(reference);
    std::mt19937 rng(11);
    std::uniform_int_distribution<int> delay_us(0, 60000);
    int interrupted = 0;
    for (int trial = 0; trial < 8; trial++) {
        const pid_t child = fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            try {
                save_safetensors(path, next);
            } catch (...) {
                _exit(2);
            }
            _exit(0);
        }
        usleep(static_cast<useconds_t>(delay_us(rng)));
        kill(child, SIGKILL);
        int status = 0;
        waitpid(child, &status, 0);
        if (WIFSIGNALED(status)) interrupted++;
        const std::string now = read_file(path);
        EXPECT_TRUE(now == previous || now == complete) << "trial " << trial << ": a file of " << now.size()
                                                        << " bytes is neither the old nor the new one";
        EXPECT_NO_THROW(load_safetensors(path));
        for (const std::string& temp : leftover_temps(path)) std::remove(temp.c_str());  // a kill cannot clean up
    }
    EXPECT_GT(interrupted, 0) << "no save was interrupted: the test did not test anything";
}

// A write that fails (here the file-size limit, EFBIG, as a full disk would)
// is an Error, the previous file is intact and no temporary file remains.
TEST(SafetensorsAtomic, FailedWriteIsAnErrorAndLeavesNoTrace) {
    const std::string path = temp_path("full.safetensors");
    save_safetensors(path, {{"w", tensor_from({1, 2, 3}, {3}, DType::Float32)}});
    const std::string previous = read_file(path);
    const StateDict next = large_state(3.0f);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        signal(SIGXFSZ, SIG_IGN);
        const rlimit limit{1 << 20, 1 << 20};
        setrlimit(RLIMIT_FSIZE, &limit);
        try {
            save_safetensors(path, next);
        } catch (const Error& e) {
            _exit(std::string(e.what()).find("write failed") != std::string::npos ? 0 : 3);
        }
        _exit(4);
    }
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "expected an Error saying the write failed (3: another Error, 4: none)";
    EXPECT_EQ(read_file(path), previous);
    EXPECT_TRUE(leftover_temps(path).empty());
}

// A target that is not a regular file is written in place, never replaced:
// /dev/full fails with ENOSPC and stays a device.
TEST(SafetensorsAtomic, DeviceTargetIsWrittenInPlace) {
    EXPECT_ERROR_CONTAINS(save_safetensors("/dev/full", large_state(1.0f)), "write failed");
    struct stat st;
    ASSERT_EQ(stat("/dev/full", &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
    EXPECT_TRUE(leftover_temps("/dev/full").empty());
}

// A directory where no file can be created (procfs refuses even root) and a
// missing parent: Errors, and nothing created.
TEST(SafetensorsAtomic, UnwritableDirectoryIsAnError) {
    const StateDict sd = {{"w", tensor_from({1}, {1}, DType::Float32)}};
    EXPECT_ERROR_CONTAINS(save_safetensors("/proc/bnforge_test.safetensors", sd), "cannot open for writing");
    EXPECT_TRUE(leftover_temps("/proc/bnforge_test.safetensors").empty());
    const std::string missing = temp_path("no_such_dir") + "/x.safetensors";
    EXPECT_ERROR_CONTAINS(save_safetensors(missing, sd), "cannot open for writing");
}

}  // namespace
}  // namespace bnforge
