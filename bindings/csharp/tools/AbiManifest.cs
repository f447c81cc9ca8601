// Prints the C# binding's view of the C API in the ABI-manifest format (see
// bindings/csharp/README.md): read by reflection from Kiln.dll, so it reports what the
// marshaller will actually do. Sizes and offsets are Marshal.SizeOf / Marshal.OffsetOf
// of this process (run it on x86-64 Linux for the manifest the drift guard compares).
// Console program for Mono, not part of the Unity package: compiled to nothing in Unity.
#if !UNITY_5_3_OR_NEWER
using System;
using System.Collections.Generic;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using Kiln.Interop;

static class AbiManifest
{
    static string TypeName(Type t, bool isField)
    {
        if (t.IsByRef || t.IsArray || t.IsPointer) return "ptr";
        if (typeof(SafeHandle).IsAssignableFrom(t)) return "ptr";
        if (typeof(Delegate).IsAssignableFrom(t)) return "fnptr";
        if (t == typeof(KilnFnPtr)) return "fnptr";
        if (t == typeof(void)) return "void";
        if (t == typeof(byte)) return "u8";
        if (t == typeof(sbyte)) return "i8";
        if (t == typeof(ushort)) return "u16";
        if (t == typeof(short)) return "i16";
        if (t == typeof(uint)) return "u32";
        if (t == typeof(int)) return "i32";
        if (t == typeof(ulong)) return "u64";
        if (t == typeof(long)) return "i64";
        if (t == typeof(float)) return "f32";
        if (t == typeof(double)) return "f64";
        if (t == typeof(UIntPtr)) return "usize";
        if (t == typeof(IntPtr)) return "ptr";
        if (t.IsEnum) return TypeName(Enum.GetUnderlyingType(t), isField);
        // Anything else (string, bool, a struct by value) is not part of the vocabulary:
        // print it so the guard fails loudly instead of guessing.
        return "unmapped:" + t.FullName;
    }

    static string Snake(string pascal)
    {
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < pascal.Length; i++)
        {
            char c = pascal[i];
            if (i > 0 && char.IsUpper(c) && (char.IsLower(pascal[i - 1]) || char.IsDigit(pascal[i - 1]))) sb.Append('_');
            sb.Append(char.ToUpperInvariant(c));
        }
        return sb.ToString();
    }

    static int Main()
    {
        Assembly kiln = typeof(KilnNative).Assembly;
        var lines = new SortedSet<string>(StringComparer.Ordinal);
        foreach (Type type in kiln.GetTypes())
        {
            foreach (MethodInfo m in type.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                if ((m.Attributes & MethodAttributes.PinvokeImpl) == 0) continue;
                var dll = (DllImportAttribute)m.GetCustomAttributes(typeof(DllImportAttribute), false).FirstOrDefault();
                string name = dll != null && !string.IsNullOrEmpty(dll.EntryPoint) ? dll.EntryPoint : m.Name;
                var args = m.GetParameters().Select(p => TypeName(p.ParameterType, false));
                lines.Add("fn " + name + "(" + string.Join(",", args) + ") -> " + TypeName(m.ReturnType, false));
            }
            var sname = (NativeNameAttribute)type.GetCustomAttributes(typeof(NativeNameAttribute), false).FirstOrDefault();
            if (sname != null && type.IsValueType)
            {
                lines.Add("struct " + sname.Name + " size " + Marshal.SizeOf(type));
                foreach (FieldInfo f in type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic))
                    lines.Add("field " + sname.Name + "." + f.Name + " " + Marshal.OffsetOf(type, f.Name).ToInt64() + " " + TypeName(f.FieldType, true));
            }
            var prefix = (NativeEnumAttribute)type.GetCustomAttributes(typeof(NativeEnumAttribute), false).FirstOrDefault();
            if (prefix != null && type.IsEnum)
            {
                foreach (FieldInfo f in type.GetFields(BindingFlags.Static | BindingFlags.Public))
                {
                    var over = (NativeNameAttribute)f.GetCustomAttributes(typeof(NativeNameAttribute), false).FirstOrDefault();
                    string cname = over != null ? over.Name : prefix.Prefix + Snake(f.Name);
                    lines.Add("enum " + cname + " " + Convert.ToUInt64(f.GetValue(null)));
                }
            }
        }
        foreach (string l in lines) Console.WriteLine(l);
        return 0;
    }
}
#endif
