// Explicit UTF-8 both ways. Strings go in as NUL-terminated byte[]; strings come out
// through Kiln's caller-buffer convention (query the length with a NULL buffer, then
// copy), so the marshaller never frees a Kiln pointer or guesses a code page.
using System;
using System.Runtime.InteropServices;
using System.Text;

namespace Kiln.Interop
{
    /// <summary>UTF-8 conversions for the C API.</summary>
    public static class Utf8
    {
        static readonly UTF8Encoding Strict = new UTF8Encoding(false, true);

        /// <summary>The string's UTF-8 bytes plus a NUL, or null for null.</summary>
        public static byte[] ToNative(string s)
        {
            if (s == null) return null;
            if (s.IndexOf('\0') >= 0) throw new ArgumentException("a string passed to Kiln must not contain NUL characters");
            int n = Strict.GetByteCount(s);
            byte[] bytes = new byte[n + 1];
            Strict.GetBytes(s, 0, s.Length, bytes, 0);
            return bytes;
        }

        /// <summary>Reads a NUL-terminated UTF-8 string Kiln owns (never frees it); null for zero.</summary>
        public static string FromNative(IntPtr p)
        {
            if (p == IntPtr.Zero) return null;
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0) n++;
            return FromNative(p, n);
        }

        /// <summary>Reads <c>length</c> UTF-8 bytes at <c>p</c>.</summary>
        public static string FromNative(IntPtr p, int length)
        {
            if (p == IntPtr.Zero || length <= 0) return "";
            byte[] bytes = new byte[length];
            Marshal.Copy(p, bytes, 0, length);
            return Encoding.UTF8.GetString(bytes);
        }

        /// <summary>A C function following the header's string-out convention.</summary>
        public delegate uint StringOut(byte[] buf, UIntPtr bufLen, out UIntPtr lenOut);

        /// <summary>Calls <c>call</c> once to size the string and once to copy it.</summary>
        public static uint ReadString(StringOut call, out string value)
        {
            value = null;
            UIntPtr len;
            uint status = call(null, UIntPtr.Zero, out len);
            if (status != 0 && status != (uint)KilnStatus.BufferTooSmall) return status;
            // The text may have grown between the calls (a job's error): retry a few times.
            for (int attempt = 0; attempt < 4; attempt++)
            {
                int n = checked((int)len.ToUInt64());
                byte[] buf = new byte[n + 1];
                status = call(buf, new UIntPtr((ulong)buf.Length), out len);
                if (status == 0)
                {
                    value = Encoding.UTF8.GetString(buf, 0, Math.Min(n, checked((int)len.ToUInt64())));
                    return 0;
                }
                if (status != (uint)KilnStatus.BufferTooSmall) return status;
            }
            return status;
        }
    }
}
