// Readers for the Rust tests' golden files, so the C# suite checks the same numbers without
// extra assemblies (Mono's System.Runtime.Serialization is not installed on CI): numpy .npy
// arrays of float32 and the cases.json beside them.
// Console program for Mono, not part of the Unity package: compiled to nothing in Unity.
#if !UNITY_5_3_OR_NEWER
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;

static class Goldens
{
    /// <summary>The values of a little-endian float32, C-order .npy file (what numpy.save writes).</summary>
    public static float[] ReadNpyF32(string path)
    {
        byte[] b = File.ReadAllBytes(path);
        if (b.Length < 10 || b[0] != 0x93 || Encoding.ASCII.GetString(b, 1, 5) != "NUMPY")
            throw new Exception(path + ": not an .npy file");
        // Version 1 has a 2-byte header length, versions 2 and 3 a 4-byte one.
        int headerLen = b[6] == 1 ? b[8] | (b[9] << 8) : BitConverter.ToInt32(b, 8);
        int start = b[6] == 1 ? 10 : 12;
        string header = Encoding.ASCII.GetString(b, start, headerLen);
        if (!header.Contains("'descr': '<f4'") || !header.Contains("'fortran_order': False"))
            throw new Exception(path + ": expected little-endian float32 in C order, header " + header.Trim());
        if (!BitConverter.IsLittleEndian) throw new Exception("big-endian host: .npy bytes would need swapping");
        int offset = start + headerLen;
        if ((b.Length - offset) % 4 != 0) throw new Exception(path + ": data is not whole float32 values");
        var values = new float[(b.Length - offset) / 4];
        Buffer.BlockCopy(b, offset, values, 0, values.Length * 4);
        return values;
    }

    /// <summary>The case named <c>name</c> in a golden cases.json (null: the first): a list of
    /// cases, or an object whose "cases" is one (torch-seed's and torch-cuda-seed's, beside their
    /// "draws").</summary>
    public static Dictionary<string, object> Case(string casesJson, string name)
    {
        object parsed = Json.Parse(File.ReadAllText(casesJson));
        var top = parsed as Dictionary<string, object>;
        var all = (List<object>)(top != null ? top["cases"] : parsed);
        foreach (Dictionary<string, object> c in all.Cast<Dictionary<string, object>>())
            if (name == null || (string)c["name"] == name) return c;
        throw new Exception(casesJson + " has no case " + name);
    }

    /// <summary>The keys among <c>keys</c> whose values differ between two cases (a key missing
    /// from one counts as differing): empty when both describe the same request.</summary>
    public static List<string> DifferingFields(Dictionary<string, object> a, Dictionary<string, object> b, params string[] keys)
    {
        var differing = new List<string>();
        foreach (string key in keys)
        {
            object x, y;
            if (!a.TryGetValue(key, out x) || !b.TryGetValue(key, out y) || !object.Equals(x, y)) differing.Add(key);
        }
        return differing;
    }

    /// <summary>A string field, or null when the case has none (e.g. no negative prompt).</summary>
    public static string Text(Dictionary<string, object> c, string key)
    {
        object v;
        return c.TryGetValue(key, out v) ? (string)v : null;
    }

    /// <summary>A number field (required).</summary>
    public static double Number(Dictionary<string, object> c, string key)
    {
        object v;
        if (!c.TryGetValue(key, out v)) throw new Exception("golden case has no " + key);
        return (double)v;
    }

    /// <summary>
    /// How far RGBA8 pixels are from a float RGB image in [0, 1] (H×W×3, the goldens' layout)
    /// beyond 8-bit rounding: max |byte/255 − golden| − 0.5/255, at least 0.
    /// </summary>
    public static double PastRounding(byte[] rgba, float[] rgb)
    {
        return Math.Max(MaxAbs(rgba, rgb) - 0.5 / 255, 0);
    }

    /// <summary>mean |byte/255 − golden| of RGBA8 pixels against a float RGB image in [0, 1] (H×W×3),
    /// over every R, G and B value (alpha is not compared).</summary>
    public static double MeanAbs(byte[] rgba, float[] rgb)
    {
        if (rgba.Length / 4 * 3 != rgb.Length) throw new Exception("pixel counts differ: " + rgba.Length / 4 + " vs " + rgb.Length / 3);
        double sum = 0;
        for (int i = 0; i < rgb.Length / 3; i++)
            for (int ch = 0; ch < 3; ch++)
                sum += Math.Abs(rgba[i * 4 + ch] / 255.0 - rgb[i * 3 + ch]);
        return sum / rgb.Length;
    }

    /// <summary>max |byte/255 − golden| of RGBA8 pixels against a float RGB image in [0, 1] (H×W×3).</summary>
    public static double MaxAbs(byte[] rgba, float[] rgb)
    {
        if (rgba.Length / 4 * 3 != rgb.Length) throw new Exception("pixel counts differ: " + rgba.Length / 4 + " vs " + rgb.Length / 3);
        double worst = 0;
        for (int i = 0; i < rgb.Length / 3; i++)
            for (int ch = 0; ch < 3; ch++)
                worst = Math.Max(worst, Math.Abs(rgba[i * 4 + ch] / 255.0 - rgb[i * 3 + ch]));
        return worst;
    }
}

/// <summary>A small JSON reader: objects as Dictionary, arrays as List, numbers as double.</summary>
sealed class Json
{
    readonly string s;
    int i;

    Json(string text) { s = text; }

    public static object Parse(string text)
    {
        var p = new Json(text);
        object v = p.Value();
        p.Space();
        if (p.i != text.Length) throw p.Error("trailing text");
        return v;
    }

    Exception Error(string what) { return new FormatException("JSON: " + what + " at offset " + i); }

    void Space() { while (i < s.Length && char.IsWhiteSpace(s[i])) i++; }

    char Peek() { Space(); if (i >= s.Length) throw Error("unexpected end"); return s[i]; }

    void Expect(char c) { if (Peek() != c) throw Error("expected '" + c + "'"); i++; }

    bool Literal(string word)
    {
        if (string.CompareOrdinal(s, i, word, 0, word.Length) != 0) return false;
        i += word.Length;
        return true;
    }

    object Value()
    {
        char c = Peek();
        if (c == '{')
        {
            i++;
            var d = new Dictionary<string, object>();
            if (Peek() == '}') { i++; return d; }
            while (true)
            {
                Space();
                string key = String();
                Expect(':');
                d[key] = Value();
                if (Peek() == ',') { i++; continue; }
                Expect('}');
                return d;
            }
        }
        if (c == '[')
        {
            i++;
            var list = new List<object>();
            if (Peek() == ']') { i++; return list; }
            while (true)
            {
                list.Add(Value());
                if (Peek() == ',') { i++; continue; }
                Expect(']');
                return list;
            }
        }
        if (c == '"') return String();
        if (Literal("true")) return true;
        if (Literal("false")) return false;
        if (Literal("null")) return null;
        int start = i;
        while (i < s.Length && "+-0123456789.eE".IndexOf(s[i]) >= 0) i++;
        if (i == start) throw Error("unexpected '" + c + "'");
        return double.Parse(s.Substring(start, i - start), NumberStyles.Float, CultureInfo.InvariantCulture);
    }

    string String()
    {
        Expect('"');
        var sb = new StringBuilder();
        while (true)
        {
            if (i >= s.Length) throw Error("unterminated string");
            char c = s[i++];
            if (c == '"') return sb.ToString();
            if (c != '\\') { sb.Append(c); continue; }
            char e = s[i++];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'u': sb.Append((char)Convert.ToInt32(s.Substring(i, 4), 16)); i += 4; break;
                default: sb.Append(e); break;
            }
        }
    }
}
#endif
