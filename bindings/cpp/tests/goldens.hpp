// Readers for the Rust tests' golden files, so test_kiln.cpp checks the same numbers with no
// library beyond the standard one: numpy .npy arrays of float32 and the cases.json beside them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace goldens {

inline std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/** The values of a little-endian float32, C-order .npy file (what numpy.save writes). */
inline std::vector<float> read_npy_f32(const std::string &path) {
    const std::string b = read_file(path);
    if (b.size() < 10 || b.compare(0, 6, "\x93NUMPY") != 0) throw std::runtime_error(path + ": not an .npy file");
    // Version 1 has a 2-byte header length, versions 2 and 3 a 4-byte one (little-endian).
    const auto byte = [&b](std::size_t i) { return std::size_t(static_cast<unsigned char>(b[i])); };
    const bool v1 = byte(6) == 1;
    const std::size_t header_len = v1 ? byte(8) | byte(9) << 8 : byte(8) | byte(9) << 8 | byte(10) << 16 | byte(11) << 24;
    const std::size_t start = v1 ? 10 : 12;
    const std::string header = b.substr(start, header_len);
    if (header.find("'descr': '<f4'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos)
        throw std::runtime_error(path + ": expected little-endian float32 in C order, header " + header);
    const std::uint16_t one = 1;
    if (*reinterpret_cast<const unsigned char *>(&one) != 1) throw std::runtime_error("big-endian host: .npy bytes would need swapping");
    const std::size_t offset = start + header_len;
    if ((b.size() - offset) % 4 != 0) throw std::runtime_error(path + ": data is not whole float32 values");
    std::vector<float> values((b.size() - offset) / 4);
    std::memcpy(values.data(), b.data() + offset, values.size() * 4);
    return values;
}

/** A JSON value: what cases.json holds (objects, arrays, strings, numbers, booleans, null). */
struct Json {
    enum class Kind { null, boolean, number, string, array, object } kind = Kind::null;
    double number = 0;
    std::string text;
    std::vector<Json> items;
    std::map<std::string, Json> fields;

    bool has(const std::string &key) const { return fields.count(key) != 0; }
    const Json &operator[](const std::string &key) const {
        auto it = fields.find(key);
        if (it == fields.end()) throw std::runtime_error("JSON object has no " + key);
        return it->second;
    }
};

class JsonParser {
public:
    explicit JsonParser(const std::string &s) : s_(s) {}
    Json document() {
        Json v = value();
        space();
        if (i_ != s_.size()) fail("trailing text");
        return v;
    }

private:
    [[noreturn]] void fail(const std::string &what) const {
        throw std::runtime_error("JSON: " + what + " at offset " + std::to_string(i_));
    }
    void space() {
        while (i_ < s_.size() && std::strchr(" \t\r\n", s_[i_]) != nullptr) ++i_;
    }
    char peek() {
        space();
        if (i_ >= s_.size()) fail("unexpected end");
        return s_[i_];
    }
    void expect(char c) {
        if (peek() != c) fail(std::string("expected '") + c + "'");
        ++i_;
    }
    bool literal(const char *word) {
        const std::size_t n = std::strlen(word);
        if (s_.compare(i_, n, word) != 0) return false;
        i_ += n;
        return true;
    }
    std::string string() {
        expect('"');
        std::string out;
        while (true) {
            if (i_ >= s_.size()) fail("unterminated string");
            const char c = s_[i_++];
            if (c == '"') return out;
            if (c != '\\') {
                out += c;
                continue;
            }
            const char e = s_[i_++];
            switch (e) {
            case 'n': out += '\n'; break;
            case 't': out += '\t'; break;
            case 'r': out += '\r'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'u': {
                // Only ASCII escapes occur in the goldens; anything else is refused, not mangled.
                const unsigned long code = std::strtoul(s_.substr(i_, 4).c_str(), nullptr, 16);
                if (code > 0x7f) fail("non-ASCII \\u escape");
                out += char(code);
                i_ += 4;
                break;
            }
            default: out += e; break;
            }
        }
    }
    Json value() {
        Json v;
        const char c = peek();
        if (c == '{') {
            ++i_;
            v.kind = Json::Kind::object;
            if (peek() == '}') {
                ++i_;
                return v;
            }
            while (true) {
                space();
                std::string key = string();
                expect(':');
                v.fields[key] = value();
                if (peek() == ',') {
                    ++i_;
                    continue;
                }
                expect('}');
                return v;
            }
        }
        if (c == '[') {
            ++i_;
            v.kind = Json::Kind::array;
            if (peek() == ']') {
                ++i_;
                return v;
            }
            while (true) {
                v.items.push_back(value());
                if (peek() == ',') {
                    ++i_;
                    continue;
                }
                expect(']');
                return v;
            }
        }
        if (c == '"') {
            v.kind = Json::Kind::string;
            v.text = string();
            return v;
        }
        if (literal("true")) {
            v.kind = Json::Kind::boolean;
            v.number = 1;
            return v;
        }
        if (literal("false")) {
            v.kind = Json::Kind::boolean;
            return v;
        }
        if (literal("null")) return v;
        const std::size_t start = i_;
        while (i_ < s_.size() && std::strchr("+-0123456789.eE", s_[i_]) != nullptr) ++i_;
        if (i_ == start) fail(std::string("unexpected '") + c + "'");
        std::istringstream in(s_.substr(start, i_ - start));
        in.imbue(std::locale::classic());
        in >> v.number;
        if (!in) fail("bad number");
        v.kind = Json::Kind::number;
        return v;
    }

    const std::string &s_;
    std::size_t i_ = 0;
};

/** The case named `name` in a golden cases.json (empty name: the first). */
inline Json golden_case(const std::string &cases_json, const std::string &name) {
    const std::string text = read_file(cases_json);
    Json all = JsonParser(text).document();
    for (const Json &c : all.items)
        if (name.empty() || c["name"].text == name) return c;
    throw std::runtime_error(cases_json + " has no case " + name);
}

/**
 * How far RGBA8 pixels are from a float RGB image in [0, 1] (H×W×3, the goldens' layout) beyond 8-bit
 * rounding: max |byte/255 − golden| − 0.5/255, at least 0.
 */
inline double past_rounding(const std::vector<std::uint8_t> &rgba, const std::vector<float> &rgb) {
    if (rgba.size() / 4 * 3 != rgb.size()) throw std::runtime_error("pixel counts differ");
    double worst = 0;
    for (std::size_t i = 0; i < rgb.size() / 3; ++i)
        for (std::size_t ch = 0; ch < 3; ++ch) worst = std::max(worst, std::fabs(rgba[i * 4 + ch] / 255.0 - double(rgb[i * 3 + ch])));
    return std::max(worst - 0.5 / 255, 0.0);
}

/** The mean |byte/255 − golden| over the RGB values, 8-bit rounding included. */
inline double mean_abs(const std::vector<std::uint8_t> &rgba, const std::vector<float> &rgb) {
    if (rgba.size() / 4 * 3 != rgb.size() || rgb.empty()) throw std::runtime_error("pixel counts differ");
    double sum = 0;
    for (std::size_t i = 0; i < rgb.size() / 3; ++i)
        for (std::size_t ch = 0; ch < 3; ++ch) sum += std::fabs(rgba[i * 4 + ch] / 255.0 - double(rgb[i * 3 + ch]));
    return sum / double(rgb.size());
}

/**
 * The mean of the same per-value distance: mean over the RGB values of max(|byte/255 − golden| − 0.5/255, 0),
 * for goldens whose bound is on the mean |difference| of the float image (the bytes' own rounding left out,
 * as past_rounding does for the maximum).
 */
inline double mean_past_rounding(const std::vector<std::uint8_t> &rgba, const std::vector<float> &rgb) {
    if (rgba.size() / 4 * 3 != rgb.size() || rgb.empty()) throw std::runtime_error("pixel counts differ");
    double sum = 0;
    for (std::size_t i = 0; i < rgb.size() / 3; ++i)
        for (std::size_t ch = 0; ch < 3; ++ch)
            sum += std::max(std::fabs(rgba[i * 4 + ch] / 255.0 - double(rgb[i * 3 + ch])) - 0.5 / 255, 0.0);
    return sum / double(rgb.size());
}

}  // namespace goldens
