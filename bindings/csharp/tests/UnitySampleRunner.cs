// Runs Samples~/FrameLoop/KilnFrameLoopSample.cs outside Unity, the way Unity drives a
// MonoBehaviour: Start once, then Update once a frame (every 5 ms here) until the sample
// says Done or disables itself, then OnDestroy. Built by build.sh against the UnityEngine
// stub (tests/unity-stubs) and the binding compiled as Unity compiles it; run by
// tests/csharp.rs, which checks the texture against the C API's pixels.
//   mono UnitySampleRunner.exe MODEL_DIR OUT.rgba
// Prints each status change and the progress seen in each phase; writes the texture's
// bytes as the sample handed them to Unity (rows bottom-up).
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Reflection;
using System.Runtime.InteropServices;
using UnityEngine;

static class UnitySampleRunner
{
    static void Call(object target, string method)
    {
        MethodInfo m = target.GetType().GetMethod(method, BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public);
        m.Invoke(target, null);
    }

    [DllImport("libc", EntryPoint = "_exit", CallingConvention = CallingConvention.Cdecl)]
    static extern void PosixExit(int code);

    static int Main(string[] args)
    {
        int code = Run(args);
        // Mono 6.8 waits forever at exit for Kiln's job workers, native threads that called
        // managed code (the log handler); see KilnTests.Exit and the README's limits.
        Console.Out.Flush();
        if (Environment.OSVersion.Platform == PlatformID.Unix) PosixExit(code);
        return code;
    }

    static int Run(string[] args)
    {
        if (args.Length != 2)
        {
            Console.Error.WriteLine("usage: UnitySampleRunner.exe MODEL_DIR OUT.rgba");
            return 2;
        }
        var sample = new KilnFrameLoopSample();
        sample.modelPath = Path.GetFullPath(args[0]);
        sample.prompt = "mossy stone brick wall";
        sample.seed = 42;
        sample.seamless = false;
        sample.enabled = true;
        var renderer = new Renderer { material = new Material() };
        sample.StubAddComponent(renderer);

        string status = null;
        var progress = new List<string>();
        var clock = Stopwatch.StartNew();
        Call(sample, "Start");
        while (sample.enabled && sample.Status != "Done")
        {
            if (sample.Status != status)
            {
                if (status != null) Console.WriteLine("progress: " + string.Join(" ", progress));
                status = sample.Status;
                progress.Clear();
                Console.WriteLine("status: " + status);
            }
            string p = sample.Progress.ToString("0.000", CultureInfo.InvariantCulture);
            if (progress.Count == 0 || progress[progress.Count - 1] != p) progress.Add(p);
            if (clock.Elapsed.TotalSeconds > 300)
            {
                Console.WriteLine("timed out in status " + status);
                return 1;
            }
            System.Threading.Thread.Sleep(5);
            Call(sample, "Update");
        }
        Console.WriteLine("progress: " + string.Join(" ", progress));
        Console.WriteLine("status: " + sample.Status);
        Console.WriteLine("final progress: " + sample.Progress.ToString("0.000", CultureInfo.InvariantCulture));
        Call(sample, "OnDestroy");
        var texture = renderer.material.mainTexture as Texture2D;
        if (sample.Status != "Done" || texture == null || texture.StubData == null)
        {
            Console.WriteLine("the sample did not finish with a texture");
            return 1;
        }
        Console.WriteLine("texture " + texture.width + "x" + texture.height + ", wrap " + texture.wrapMode);
        File.WriteAllBytes(args[1], texture.StubData);
        return 0;
    }
}
