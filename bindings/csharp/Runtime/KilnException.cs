using System;
using System.Threading;
using Kiln.Interop;

namespace Kiln
{
    /// <summary>A Kiln call failed: the C status and Kiln's own message.</summary>
    public class KilnException : Exception
    {
        /// <summary>The status the C call returned.</summary>
        public readonly KilnStatus Status;
        /// <summary>Kiln's message (ONNX Runtime's text included where it had one).</summary>
        public readonly string NativeMessage;

        /// <summary>Makes the exception for <c>status</c> and its message.</summary>
        public KilnException(KilnStatus status, string message)
            : base(KilnStatusNames.Name(status) + ": " + message)
        {
            Status = status;
            NativeMessage = message;
        }
    }

    /// <summary>The outcome of a call in the non-throwing <c>Try*</c> forms.</summary>
    public struct KilnError
    {
        /// <summary>The status; <see cref="KilnStatus.Ok"/> on success.</summary>
        public KilnStatus Status;
        /// <summary>Kiln's message; empty on success.</summary>
        public string Message;
        /// <summary>True on success.</summary>
        public bool Ok { get { return Status == KilnStatus.Ok; } }
        /// <inheritdoc/>
        public override string ToString() { return Ok ? "KILN_STATUS_OK" : KilnStatusNames.Name(Status) + ": " + Message; }
    }

    /// <summary>Status names and the calling thread's last error message.</summary>
    public static class KilnStatusNames
    {
        /// <summary>The C constant's name, from the library (e.g. KILN_STATUS_BUSY).</summary>
        public static string Name(KilnStatus status) { return Utf8.FromNative(KilnNative.kiln_status_name((uint)status)); }

        /// <summary>The calling thread's message for its most recent failed Kiln call.</summary>
        public static string LastErrorMessage()
        {
            string text;
            uint s = Utf8.ReadString(KilnNative.kiln_last_error_message, out text);
            return s == 0 ? text : "(kiln_last_error_message failed with " + s + ")";
        }

        internal static KilnError Error(uint status)
        {
            var e = new KilnError { Status = (KilnStatus)status, Message = "" };
            if (status != 0) e.Message = LastErrorMessage();
            return e;
        }

        /// <summary>Throws <see cref="KilnException"/> unless <c>status</c> is OK.</summary>
        internal static void Check(uint status)
        {
            if (status != 0) throw new KilnException((KilnStatus)status, LastErrorMessage());
        }
    }

    /// <summary>
    /// Where exceptions thrown by your log and job-event handlers go. They run on Kiln's
    /// threads and are caught there (none may unwind into native code); subscribe to see them.
    /// </summary>
    public static class KilnCallbacks
    {
        static long count;
        /// <summary>Raised on the thread that caught the exception; must not throw.</summary>
        public static event Action<Exception> UnhandledException;
        /// <summary>Exceptions caught in callbacks since the process started.</summary>
        public static long CaughtCount { get { return Interlocked.Read(ref count); } }

        internal static void Report(Exception e)
        {
            Interlocked.Increment(ref count);
            try
            {
                var h = UnhandledException;
                if (h != null) h(e);
            }
            catch (Exception)
            {
                // The reporter's own failure has nowhere safer to go.
            }
        }
    }
}
