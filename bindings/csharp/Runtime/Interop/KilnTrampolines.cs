// Native code calls managed code only through the static methods here. IL2CPP requires
// each to be static and marked [MonoPInvokeCallback]; instance state travels as a
// GCHandle in user_data. Each catches every exception: one unwinding into Rust would
// tear through frames that cannot be unwound (and IL2CPP aborts on it). The delegates
// are static readonly fields, so the GC never collects one while Kiln holds its pointer.
// tests/KilnTests.cs checks by reflection that every such delegate obeys these rules.
using System;
using System.Runtime.InteropServices;
using System.Threading;
using AOT;

namespace Kiln.Interop
{
    internal static class KilnTrampolines
    {
        internal static readonly KilnJobCallback JobEventDelegate = new KilnJobCallback(OnJobEvent);
        internal static readonly KilnLogCallback LogDelegate = new KilnLogCallback(OnLog);
        internal static readonly IntPtr JobEventPointer = Marshal.GetFunctionPointerForDelegate(JobEventDelegate);
        internal static readonly IntPtr LogPointer = Marshal.GetFunctionPointerForDelegate(LogDelegate);

        // A native thread that enters managed code is attached to the runtime; Kiln's workers
        // never end, so mark them background. (Mono 6.8 still waits for such threads at exit,
        // mono/mono#20466, fixed in 6.12: console programs end with Environment.Exit.)
        [ThreadStatic] static bool attached;

        static void MarkBackground()
        {
            if (attached) return;
            attached = true;
            Thread.CurrentThread.IsBackground = true;
        }

        [MonoPInvokeCallback(typeof(KilnJobCallback))]
        static void OnJobEvent(IntPtr userData, IntPtr jobEvent)
        {
            try
            {
                MarkBackground();
                var state = (JobCallbackState)GCHandle.FromIntPtr(userData).Target;
                state.Deliver(jobEvent);
            }
            catch (Exception e)
            {
                Kiln.KilnCallbacks.Report(e);
            }
        }

        [MonoPInvokeCallback(typeof(KilnLogCallback))]
        static void OnLog(IntPtr userData, uint level, IntPtr message, UIntPtr messageLen)
        {
            try
            {
                MarkBackground();
                var sink = (LogSink)GCHandle.FromIntPtr(userData).Target;
                sink.Deliver(level, message, messageLen);
            }
            catch (Exception e)
            {
                Kiln.KilnCallbacks.Report(e);
            }
        }
    }

    /// <summary>
    /// A runtime's log handler, reachable from native code through a GCHandle. Kiln may
    /// log for a model or a job after the runtime handle is gone, so the runtime, each
    /// model and each job hold a reference; the GCHandle is freed with the last one.
    /// </summary>
    internal sealed class LogSink
    {
        readonly Action<KilnLogLevel, string> handler;
        GCHandle self;
        int references = 1;

        internal LogSink(Action<KilnLogLevel, string> handler)
        {
            this.handler = handler;
            self = GCHandle.Alloc(this);
        }

        internal IntPtr UserData { get { return GCHandle.ToIntPtr(self); } }

        internal LogSink AddRef()
        {
            Interlocked.Increment(ref references);
            return this;
        }

        internal void Release()
        {
            if (Interlocked.Decrement(ref references) == 0) self.Free();
        }

        internal void Deliver(uint level, IntPtr message, UIntPtr length)
        {
            string text = Utf8.FromNative(message, checked((int)length.ToUInt64()));
            try { handler((KilnLogLevel)level, text); }
            catch (Exception e) { Kiln.KilnCallbacks.Report(e); }
        }
    }

    /// <summary>
    /// What a job's user_data points at. Kiln delivers exactly one Finished event for a
    /// job that is not freed while queued, so the binding never frees a job id before
    /// that event: disposing a running job cancels it, and whichever of "Finished seen"
    /// and "owner released" comes second frees the id, the GCHandle and the log lease.
    /// </summary>
    internal sealed class JobCallbackState
    {
        const int FinishedBit = 1, ReleasedBit = 2;
        readonly Action<Kiln.KilnJobEventArgs> handler;
        readonly LogSink sink;
        GCHandle self;
        int flags;
        internal ulong Id;
        internal Exception HandlerException;

        internal JobCallbackState(Action<Kiln.KilnJobEventArgs> handler, LogSink sink)
        {
            this.handler = handler;
            this.sink = sink;
            self = GCHandle.Alloc(this);
        }

        // Every job Kiln may still call back for, so they can all be stopped at once
        // (Unity's Editor must stop them before it unloads the scripts' domain).
        static readonly System.Collections.Generic.HashSet<JobCallbackState> live = new System.Collections.Generic.HashSet<JobCallbackState>();

        internal static JobCallbackState[] Live()
        {
            lock (live)
            {
                var all = new JobCallbackState[live.Count];
                live.CopyTo(all);
                return all;
            }
        }

        /// <summary>Kiln accepted the job: it may call back until Finished.</summary>
        internal void Submitted(ulong id)
        {
            Id = id;
            lock (live) live.Add(this);
        }

        internal IntPtr UserData { get { return GCHandle.ToIntPtr(self); } }
        /// <summary>The job's log lease (null without a log handler); valid until the owner releases the job.</summary>
        internal LogSink Sink { get { return sink; } }
        internal bool Finished { get { return (Volatile.Read(ref flags) & FinishedBit) != 0; } }
        internal bool Released { get { return (Volatile.Read(ref flags) & ReleasedBit) != 0; } }

        internal void Deliver(IntPtr jobEvent)
        {
            KilnJobEvent e = Read(jobEvent);
            try
            {
                if (handler != null) handler(new Kiln.KilnJobEventArgs(e));
            }
            catch (Exception x)
            {
                HandlerException = x;
                Kiln.KilnCallbacks.Report(x);
            }
            finally
            {
                if (e.kind == (uint)KilnJobEventKind.Finished) Mark(FinishedBit);
            }
        }

        /// <summary>The owner is done with the job (Dispose or finalizer).</summary>
        internal void Release() { Mark(ReleasedBit); }

        /// <summary>Submission failed: Kiln never saw user_data.</summary>
        internal void Abandon()
        {
            self.Free();
            if (sink != null) sink.Release();
        }

        void Mark(int bit)
        {
            int old, now;
            do
            {
                old = Volatile.Read(ref flags);
                now = old | bit;
            } while (Interlocked.CompareExchange(ref flags, now, old) != old);
            if ((now & FinishedBit) != 0 && (old & FinishedBit) == 0)
            {
                lock (live) live.Remove(this);
            }
            if (now == (FinishedBit | ReleasedBit) && old != now)
            {
                KilnNative.kiln_job_free(Id);
                self.Free();
                if (sink != null) sink.Release();
            }
        }

        static KilnJobEvent Read(IntPtr p)
        {
            int ours = Marshal.SizeOf(typeof(KilnJobEvent));
            int theirs = Marshal.ReadInt32(p);
            if (theirs >= ours) return (KilnJobEvent)Marshal.PtrToStructure(p, typeof(KilnJobEvent));
            // An older library's smaller event: the fields it lacks read as 0.
            var bytes = new byte[ours];
            Marshal.Copy(p, bytes, 0, Math.Max(0, theirs));
            var pin = GCHandle.Alloc(bytes, GCHandleType.Pinned);
            try { return (KilnJobEvent)Marshal.PtrToStructure(pin.AddrOfPinnedObject(), typeof(KilnJobEvent)); }
            finally { pin.Free(); }
        }
    }
}
