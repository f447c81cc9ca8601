// Prints this binding's view of the C API (kiln.hpp's tables) in the drift guard's manifest format:
// see bindings/cpp/abi-manifest.sh and tests/bindings.rs. Types come from the tables' own spelling,
// which kiln.hpp's static_asserts have already checked against kiln.h.
#include "kiln.hpp"

#include <cstddef>
#include <cstdio>
#include <string>

namespace {

std::string trim(const std::string &s) {
    std::size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// One C type spelling to the manifest vocabulary; anything unknown is printed as such so the guard flags it.
std::string vocab(std::string t) {
    t = trim(t);
    if (t.find('*') != std::string::npos) return "ptr";
    for (const char *word : {"const ", "struct "})
        for (std::size_t at; (at = t.find(word)) != std::string::npos;) t.erase(at, std::string(word).size());
    t = trim(t);
    static const char *const table[][2] = {
        {"void", "void"},     {"uint8_t", "u8"},   {"int8_t", "i8"},     {"uint16_t", "u16"}, {"int16_t", "i16"},
        {"uint32_t", "u32"},  {"int32_t", "i32"},  {"uint64_t", "u64"},  {"int64_t", "i64"}, {"size_t", "usize"},
        {"float", "f32"},     {"double", "f64"},   {"kiln_status", "u32"}, {"kiln_job_callback", "fnptr"},
        {"kiln_log_fn", "fnptr"},
    };
    for (const auto &row : table)
        if (t == row[0]) return row[1];
    return "unknown:" + t;
}

// "(a, b, c)" to "a,b,c" in the vocabulary.
std::string params(std::string list) {
    list = trim(list);
    list = list.substr(1, list.size() - 2);
    std::string out;
    std::size_t start = 0;
    while (!trim(list).empty()) {
        std::size_t comma = list.find(',', start);
        std::string one = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!out.empty()) out += ",";
        out += vocab(one);
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

} // namespace

int main() {
#define KILN_PRINT_FN(ret, name, args) \
    std::printf("fn %s(%s) -> %s\n", #name, params(#args).c_str(), vocab(#ret).c_str());
    KILN_HPP_FUNCTIONS(KILN_PRINT_FN)
#define KILN_PRINT_STRUCT(st, last) std::printf("struct %s size %zu\n", #st, sizeof(st));
    KILN_HPP_STRUCTS(KILN_PRINT_STRUCT)
#define KILN_PRINT_FIELD(st, field, type) \
    std::printf("field %s.%s %zu %s\n", #st, #field, offsetof(st, field), vocab(#type).c_str());
    KILN_HPP_STRUCT_FIELDS(KILN_PRINT_FIELD)
#define KILN_PRINT_ENUM(Enum) [](const char *c, Enum v) { std::printf("enum %s %u\n", c, kiln::to_c(v)); }
#define KILN_PRINT_CONSTANT(cpp, c) print(#c, E::cpp);
#define KILN_PRINT_TABLE(Enum, TABLE) { using E = kiln::Enum; auto print = KILN_PRINT_ENUM(E); TABLE(KILN_PRINT_CONSTANT) }
    KILN_PRINT_TABLE(Status, KILN_HPP_ENUM_STATUS)
    KILN_PRINT_TABLE(LogLevel, KILN_HPP_ENUM_LOGLEVEL)
    KILN_PRINT_TABLE(Scheduler, KILN_HPP_ENUM_SCHEDULER)
    KILN_PRINT_TABLE(NoiseGenerator, KILN_HPP_ENUM_NOISEGENERATOR)
    KILN_PRINT_TABLE(JobState, KILN_HPP_ENUM_JOBSTATE)
    KILN_PRINT_TABLE(JobEventKind, KILN_HPP_ENUM_JOBEVENTKIND)
    KILN_PRINT_TABLE(Provider, KILN_HPP_ENUM_PROVIDER)
    KILN_PRINT_TABLE(Graph, KILN_HPP_ENUM_GRAPH)
    KILN_PRINT_TABLE(Residency, KILN_HPP_ENUM_RESIDENCY)
    KILN_PRINT_TABLE(GpuMath, KILN_HPP_ENUM_GPUMATH)
    KILN_PRINT_TABLE(Seamless, KILN_HPP_ENUM_SEAMLESS)
    KILN_PRINT_TABLE(Quantization, KILN_HPP_ENUM_QUANTIZATION)
    KILN_PRINT_TABLE(Attention, KILN_HPP_ENUM_ATTENTION)
    KILN_PRINT_TABLE(NormalConvention, KILN_HPP_ENUM_NORMALCONVENTION)
    KILN_PRINT_TABLE(CellColor, KILN_HPP_ENUM_CELLCOLOR)
    KILN_PRINT_TABLE(Matte, KILN_HPP_ENUM_MATTE)
    KILN_PRINT_TABLE(ControlPreprocess, KILN_HPP_ENUM_CONTROLPREPROCESS)
    KILN_PRINT_TABLE(UpscaleAlpha, KILN_HPP_ENUM_UPSCALEALPHA)
    return 0;
}
