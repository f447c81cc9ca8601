// The C# binding's tests, run with Mono: P/Invokes libkiln, generates from the tiny test
// fixture, and checks pixels, error statuses, callbacks, the row flip and, by reflection,
// the rules IL2CPP enforces but Mono's JIT does not. Prints one line per test and
// "N passed, N failed"; exits 1 on any failure.
//
//   mono KilnTests.exe MODEL_DIR SCRATCH_DIR [CONTROLNET_MODEL_DIR [REFINER_MODEL_DIR]]
// MODEL_DIR is tests/fixtures/tiny-sd: the SDXL tests find tiny-sdxl, sdxl-embedding, lora and
// golden/ beside it; REFINER_MODEL_DIR is the refiner-style fixture tests/common assembles.
// Console program for Mono, not part of the Unity package: compiled to nothing in Unity.
#if !UNITY_5_3_OR_NEWER
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Threading;
using Kiln;
using Kiln.Interop;

static class KilnTests
{
    static string modelDir, scratch, controlNetModelDir, refinerModelDir;
    static KilnRuntime runtime;
    static KilnModel model;

    static void Check(bool ok, string what)
    {
        if (!ok) throw new Exception(what);
    }

    static void Equal<T>(T expected, T actual, string what)
    {
        if (!EqualityComparer<T>.Default.Equals(expected, actual))
            throw new Exception(what + ": expected " + expected + ", got " + actual);
    }

    static KilnException Throws(Action a, KilnStatus status, string what)
    {
        try { a(); }
        catch (KilnException e)
        {
            Equal(status, e.Status, what + " status");
            Check(e.NativeMessage.Length > 0, what + ": empty message");
            Console.WriteLine("    " + what + " -> " + e.Message);
            return e;
        }
        throw new Exception(what + ": no KilnException (expected " + status + ")");
    }

    static void SamePixels(byte[] expected, byte[] actual, string what)
    {
        Equal(expected.Length, actual.Length, what + " length");
        int differing = 0, first = -1;
        for (int i = 0; i < expected.Length; i++)
            if (expected[i] != actual[i]) { differing++; if (first < 0) first = i; }
        Console.WriteLine("    " + what + ": " + differing + " of " + expected.Length + " bytes differ (bound: 0)");
        Check(differing == 0, what + ": first difference at byte " + first);
    }

    static KilnGenerateSettings Quick(string prompt, ulong seed)
    {
        // 4 steps keep the suite fast; the example test uses Kiln's defaults.
        return new KilnGenerateSettings { Prompt = prompt, Seed = seed, Steps = 4 };
    }

    /// <summary>Counts a job's Preview and Finished events (its callback runs on Kiln's worker thread).</summary>
    sealed class EventCounts
    {
        int previews, finished;
        public int Previews { get { return Volatile.Read(ref previews); } }
        public int Finished { get { return Volatile.Read(ref finished); } }

        /// <summary>Job settings asking for a preview at every step and counting what comes.</summary>
        public KilnJobSettings Settings()
        {
            return new KilnJobSettings
            {
                PreviewInterval = 1,
                OnEvent = ev =>
                {
                    if (ev.Kind == KilnJobEventKind.Preview) Interlocked.Increment(ref previews);
                    if (ev.Kind == KilnJobEventKind.Finished) Interlocked.Increment(ref finished);
                },
            };
        }
    }

    static KilnJobStatus PollUntilEnded(KilnJob job)
    {
        // The frame loop a game runs: poll, do other work, poll again.
        DateTime giveUp = DateTime.UtcNow.AddMinutes(5);
        while (true)
        {
            KilnJobStatus s = job.Poll();
            if (s.Ended) return s;
            if (DateTime.UtcNow > giveUp) throw new Exception("job did not end within 5 minutes");
            Thread.Sleep(5);
        }
    }

    // ---------------------------------------------------------------- tests

    static void VersionMatchesTheHeader()
    {
        Equal(KilnNative.HeaderVersion, KilnRuntime.LibraryVersion, "kiln_version()");
        Equal(KilnNative.HeaderVersionString, KilnRuntime.LibraryVersionString, "kiln_version_string()");
    }

    static void StructSizesMatchTheLibrary()
    {
        // Each *_init writes the library's sizeof into struct_size: the binding's
        // Marshal.SizeOf must be the same for this library version.
        var inits = new Dictionary<Type, Action<IntPtr>>
        {
            { typeof(KilnRuntimeOptions), KilnNative.kiln_runtime_options_init },
            { typeof(KilnModelLoadOptions), KilnNative.kiln_model_load_options_init },
            { typeof(KilnGenerateOptions), KilnNative.kiln_generate_options_init },
            { typeof(KilnJobOptions), KilnNative.kiln_job_options_init },
            { typeof(KilnSpriteOptions), KilnNative.kiln_sprite_options_init },
            { typeof(KilnPixelArtOptions), KilnNative.kiln_pixel_art_options_init },
            { typeof(KilnMaterialOptions), KilnNative.kiln_material_options_init },
            { typeof(KilnLora), KilnNative.kiln_lora_init },
            { typeof(KilnEmbedding), KilnNative.kiln_embedding_init },
            { typeof(KilnControl), KilnNative.kiln_control_init },
            { typeof(KilnUpscaleOptions), KilnNative.kiln_upscale_options_init },
        };
        IntPtr buf = Marshal.AllocHGlobal(4096);
        try
        {
            foreach (var kv in inits)
            {
                kv.Value(buf);
                int library = Marshal.ReadInt32(buf);
                Console.WriteLine("    " + kv.Key.Name + ": library " + library + " bytes, binding " + Marshal.SizeOf(kv.Key));
                Equal(library, Marshal.SizeOf(kv.Key), kv.Key.Name + " size");
            }
        }
        finally { Marshal.FreeHGlobal(buf); }
    }

    static void StatusNamesMatchTheLibrary()
    {
        // The library names each status; the binding's enum must agree on every value.
        foreach (KilnStatus s in Enum.GetValues(typeof(KilnStatus)))
        {
            string expected = "KILN_STATUS_" + string.Concat(s.ToString().Select((c, i) => i > 0 && char.IsUpper(c) ? "_" + c : c.ToString())).ToUpperInvariant();
            Equal(expected, KilnStatusNames.Name(s), "name of " + (uint)s);
        }
        Equal("KILN_STATUS_UNKNOWN", KilnStatusNames.Name((KilnStatus)12345), "unknown status");
    }

    static void InteropTypesAreBlittableAndCdecl()
    {
        Assembly kiln = typeof(KilnNative).Assembly;
        int structs = 0, functions = 0;
        foreach (Type t in kiln.GetTypes())
        {
            if (t.Namespace == "Kiln.Interop" && t.IsValueType && !t.IsEnum)
            {
                structs++;
                // Pinning throws for a type that is not blittable (bool, string, char fields).
                object boxed = Activator.CreateInstance(t);
                GCHandle.Alloc(boxed, GCHandleType.Pinned).Free();
                foreach (FieldInfo f in t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic))
                    Check(f.FieldType != typeof(bool) && f.FieldType != typeof(string) && f.FieldType != typeof(char), t.Name + "." + f.Name + " is " + f.FieldType);
            }
            foreach (MethodInfo m in t.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                if ((m.Attributes & MethodAttributes.PinvokeImpl) == 0) continue;
                functions++;
                var dll = (DllImportAttribute)m.GetCustomAttributes(typeof(DllImportAttribute), false).FirstOrDefault();
                Check(dll != null, m.Name + ": DllImportAttribute not visible");
                Equal(CallingConvention.Cdecl, dll.CallingConvention, m.Name + " calling convention");
                Check(dll.CharSet != CharSet.Ansi && dll.CharSet != CharSet.Auto, m.Name + " uses CharSet " + dll.CharSet);
                foreach (ParameterInfo p in m.GetParameters())
                {
                    Type pt = p.ParameterType.IsByRef ? p.ParameterType.GetElementType() : p.ParameterType;
                    Check(pt != typeof(string) && pt != typeof(bool) && pt != typeof(System.Text.StringBuilder), m.Name + "(" + p.Name + ") is " + pt + ": strings must be explicit UTF-8 bytes");
                }
                Check(m.ReturnType != typeof(string), m.Name + " returns string (the marshaller would free Kiln's pointer)");
            }
        }
        Console.WriteLine("    " + structs + " interop structs blittable, " + functions + " functions Cdecl without implicit strings");
        Check(structs >= 11 && functions >= 48, "reflection found too little: " + structs + " structs, " + functions + " functions");
    }

    static void CallbackTargetsAreStaticAndMarked()
    {
        // IL2CPP only accepts a static method with [MonoPInvokeCallback(typeof(D))] as a
        // delegate native code calls; Mono's JIT would accept anything, so check here.
        Assembly kiln = typeof(KilnNative).Assembly;
        Func<Type, bool> isNativeCallback = t => typeof(Delegate).IsAssignableFrom(t) && t.GetCustomAttributes(typeof(UnmanagedFunctionPointerAttribute), false).Length > 0;
        var nativeTypes = kiln.GetTypes().Where(isNativeCallback).ToList();
        Check(nativeTypes.Count >= 2, "found " + nativeTypes.Count + " native callback types");
        foreach (Type dt in nativeTypes)
        {
            var attr = (UnmanagedFunctionPointerAttribute)dt.GetCustomAttributes(typeof(UnmanagedFunctionPointerAttribute), false)[0];
            Equal(CallingConvention.Cdecl, attr.CallingConvention, dt.Name + " calling convention");
        }
        int delegates = 0;
        foreach (Type t in kiln.GetTypes())
        {
            foreach (FieldInfo f in t.GetFields(BindingFlags.Static | BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                if (!isNativeCallback(f.FieldType)) continue;
                Check(f.IsStatic && f.IsInitOnly, t.Name + "." + f.Name + ": a delegate handed to native code must be a static readonly field (kept alive, never an instance's)");
                var d = (Delegate)f.GetValue(null);
                Check(d != null, t.Name + "." + f.Name + " is null");
                MethodInfo target = d.Method;
                Check(target.IsStatic, target.Name + " is an instance method");
                Check(d.Target == null, target.Name + " closes over an object");
                var marks = target.GetCustomAttributes(false).Where(a => a.GetType().Name == "MonoPInvokeCallbackAttribute").ToList();
                Equal(1, marks.Count, target.Name + " [MonoPInvokeCallback] count");
                var declared = (Type)marks[0].GetType().GetField("DelegateType").GetValue(marks[0]);
                Equal(f.FieldType, declared, target.Name + " [MonoPInvokeCallback] type");
                // The body must catch everything: one try/catch(Exception) around it all.
                var body = target.GetMethodBody();
                Check(body.ExceptionHandlingClauses.Any(c => c.Flags == ExceptionHandlingClauseOptions.Clause && c.CatchType == typeof(Exception)), target.Name + " has no catch (Exception)");
                delegates++;
                Console.WriteLine("    " + t.Name + "." + f.Name + " -> static " + target.DeclaringType.Name + "." + target.Name + " [MonoPInvokeCallback(typeof(" + declared.Name + "))]");
            }
        }
        Check(delegates >= nativeTypes.Count, "every native callback type needs its trampoline: " + delegates + " for " + nativeTypes.Count);
        // Nothing else in the assembly may turn a delegate into a function pointer.
        foreach (Type t in kiln.GetTypes())
            foreach (MethodInfo m in t.GetMethods(BindingFlags.Static | BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
                if (m.GetCustomAttributes(false).Any(a => a.GetType().Name == "MonoPInvokeCallbackAttribute"))
                    Check(m.IsStatic, m.Name + " is marked but not static");
    }

    static void RowFlip()
    {
        // 3 rows of 2 pixels: row r holds bytes r*8 .. r*8+7.
        byte[] px = Enumerable.Range(0, 24).Select(i => (byte)i).ToArray();
        KilnPixels.FlipRowsInPlace(px, 8, 3);
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 8; x++)
                Equal((byte)((2 - y) * 8 + x), px[y * 8 + x], "odd-height flip byte " + (y * 8 + x));
        byte[] even = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        KilnPixels.FlipRowsInPlace(even, 8, 4);
        for (int y = 0; y < 4; y++) Equal((byte)((3 - y) * 8), even[y * 8], "even-height flip row " + y);
        // A padded source (pitch 12 for 2-pixel rows): padding is dropped, rows reversed.
        byte[] padded = new byte[12 * 2 + 8];
        for (int y = 0; y < 3; y++) for (int x = 0; x < 8; x++) padded[y * 12 + x] = (byte)(10 * y + x);
        byte[] up = KilnPixels.ToBottomUp(padded, 2, 3, 12);
        Equal(24, up.Length, "bottom-up length");
        for (int y = 0; y < 3; y++) for (int x = 0; x < 8; x++) Equal((byte)(10 * (2 - y) + x), up[y * 8 + x], "bottom-up byte");
        try { KilnPixels.FlipRowsInPlace(new byte[10], 8, 2); throw new Exception("no exception for a short buffer"); }
        catch (ArgumentException) { }
    }

    static void ModelInfoAndProviders()
    {
        KilnModelInfo info = model.Info;
        Console.WriteLine("    default_size " + info.default_size + ", size_multiple " + info.size_multiple + ", latent_channels " + info.latent_channels);
        Equal(64u, info.default_size, "default_size of the tiny fixture");
        Check(runtime.ProviderAvailable(KilnProvider.Cpu), "CPU provider");
        string p = model.GraphProvider(KilnGraph.Unet);
        Check(p.StartsWith("CPUExecutionProvider"), "U-Net provider: " + p);
        Check(runtime.OnnxRuntimeVersion.Length > 0 && File.Exists(runtime.OnnxRuntimePath), "ONNX Runtime path " + runtime.OnnxRuntimePath);
    }

    static void GeneratePaths()
    {
        // Generate, GenerateInto with a padded pitch, and a polled job all give the same
        // pixels for the same request; bytes between rows are left alone.
        var settings = Quick("mossy stone brick wall", 7);
        byte[] viaImage;
        using (KilnImage image = model.Generate(settings))
        {
            Equal(64, image.Width, "width");
            Equal(64, image.Height, "height");
            viaImage = image.ToArray();
            SamePixels(KilnPixels.ToBottomUp(viaImage, 64, 64, 0), image.ToArrayBottomUp(), "KilnImage.ToArrayBottomUp vs flipped ToArray");
        }
        Check(viaImage.Distinct().Count() > 16, "image is nearly constant");
        int pitch = 64 * 4 + 12;
        byte[] padded = Enumerable.Repeat((byte)0xAB, pitch * 63 + 64 * 4).ToArray();
        model.GenerateInto(settings, padded, pitch);
        byte[] tight = new byte[64 * 64 * 4];
        for (int y = 0; y < 64; y++)
        {
            Buffer.BlockCopy(padded, y * pitch, tight, y * 256, 256);
            if (y < 63) for (int i = 256; i < pitch; i++) Equal((byte)0xAB, padded[y * pitch + i], "padding byte row " + y);
        }
        SamePixels(viaImage, tight, "GenerateInto (pitch " + pitch + ") vs Generate");
        using (KilnJob job = model.Submit(settings))
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "job state");
            Equal(s.TotalSteps, s.Step, "steps done");
            SamePixels(viaImage, job.CopyImage(), "job CopyImage vs Generate");
            SamePixels(KilnPixels.ToBottomUp(viaImage, 64, 64, 0), job.CopyImageBottomUp(), "job CopyImageBottomUp vs flipped Generate");
        }
        var other = Quick("mossy stone brick wall", 8);
        using (KilnImage image = model.Generate(other))
        {
            int differing = viaImage.Zip(image.ToArray(), (a, b) => a != b ? 1 : 0).Sum();
            Console.WriteLine("    seed 8 vs seed 7: " + differing + " bytes differ (must be > 0)");
            Check(differing > 0, "another seed gave the same image");
        }
    }

    static void LorasChangeTheImage()
    {
        // tests/fixtures/lora is made for tiny-sd: its style LoRA changes the image; a broken
        // file throws its specific status and leaves the base model usable.
        string loraDir = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelDir).TrimEnd('/')), "lora");
        var settings = Quick("mossy stone brick wall", 11);
        byte[] basePixels;
        using (KilnImage image = model.Generate(settings)) basePixels = image.ToArray();
        byte[] styledPixels;
        using (KilnModel styled = model.WithLoras(new KilnLoraSpec(Path.Combine(loraDir, "style.kohya.safetensors"), 1f)))
        {
            KilnLoraSpec[] listed = styled.Loras;
            Equal(1, listed.Length, "Loras.Length");
            Check(listed[0].Path.EndsWith("style.kohya.safetensors") && listed[0].Scale == 1f, "Loras[0]: " + listed[0].Path + " " + listed[0].Scale);
            using (KilnImage image = styled.Generate(settings)) styledPixels = image.ToArray();
        }
        Equal(0, model.Loras.Length, "base model's Loras.Length");
        Equal(basePixels.Length, styledPixels.Length, "styled length");
        int differing = basePixels.Zip(styledPixels, (x, y) => x != y).Count(d => d);
        Console.WriteLine("    lora: " + differing + " of " + basePixels.Length + " bytes differ from the base model's image (need > 0)");
        Check(differing > 0, "the LoRA did not change the image");
        KilnException e = Throws(() => model.WithLoras(new KilnLoraSpec(Path.Combine(loraDir, "broken", "rank_mismatch.safetensors"))), KilnStatus.AdapterMismatch, "rank-mismatched LoRA");
        Check(e.NativeMessage.Contains("rank mismatch"), "message says rank mismatch: " + e.NativeMessage);
        Throws(() => model.WithLoras(new KilnLoraSpec(Path.Combine(loraDir, "broken", "truncated.safetensors"))), KilnStatus.ModelInvalid, "truncated LoRA");
        using (KilnImage image = model.Generate(settings)) SamePixels(basePixels, image.ToArray(), "base model after failed WithLoras");
    }

    static void LoraTextEncoderScale()
    {
        // KilnLoraSpec.TextEncoderScale (kiln_lora's has_text_encoder_scale/text_encoder_scale,
        // ComfyUI's strength_clip): the style LoRA at U-Net 1 with the text encoders left alone
        // reports 0 through the query, a LoRA without one its plain scale; it changes the image
        // against one strength for all, and an explicit 1 gives that strength's pixels; a
        // non-finite one throws InvalidArgument with the base model unchanged.
        string loraDir = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelDir).TrimEnd('/')), "lora");
        string style = Path.Combine(loraDir, "style.kohya.safetensors");
        string detail = Path.Combine(loraDir, "detail.kohya.safetensors");
        var settings = Quick("mossy stone brick wall", 11);
        byte[] oneStrength, te0;
        using (KilnModel styled = model.WithLoras(new KilnLoraSpec(style, 1f, 0f), new KilnLoraSpec(detail, 0.5f)))
        {
            Equal(0f, styled.LoraTextEncoderScale(0), "LoraTextEncoderScale(0), given 0");
            Equal(0.5f, styled.LoraTextEncoderScale(1), "LoraTextEncoderScale(1), not given: its scale");
            KilnLoraSpec[] listed = styled.Loras;
            Equal(2, listed.Length, "Loras.Length");
            Check(listed[0].Path.EndsWith("style.kohya.safetensors") && listed[0].Scale == 1f && listed[0].TextEncoderScale == 0f,
                "Loras[0]: " + listed[0].Path + " " + listed[0].Scale + " " + listed[0].TextEncoderScale);
            Check(listed[1].Path.EndsWith("detail.kohya.safetensors") && listed[1].Scale == 0.5f && listed[1].TextEncoderScale == 0.5f,
                "Loras[1]: " + listed[1].Path + " " + listed[1].Scale + " " + listed[1].TextEncoderScale);
            Throws(() => styled.LoraTextEncoderScale(2), KilnStatus.InvalidArgument, "LoraTextEncoderScale past the end");
        }
        using (KilnModel styled = model.WithLoras(new KilnLoraSpec(style, 1f, 0f)))
        {
            Equal(0f, styled.LoraTextEncoderScale(0), "LoraTextEncoderScale(0), style at 1 / 0");
            using (KilnImage image = styled.Generate(settings)) te0 = image.ToArray();
        }
        using (KilnModel styled = model.WithLoras(new KilnLoraSpec(style, 1f)))
        {
            Equal(1f, styled.LoraTextEncoderScale(0), "LoraTextEncoderScale(0), style at 1");
            using (KilnImage image = styled.Generate(settings)) oneStrength = image.ToArray();
        }
        using (KilnModel styled = model.WithLoras(new KilnLoraSpec(style, 1f, 1f)))
        using (KilnImage image = styled.Generate(settings))
            SamePixels(oneStrength, image.ToArray(), "text-encoder scale 1 given vs one strength 1");
        int differing = oneStrength.Zip(te0, (x, y) => x != y).Count(d => d);
        Console.WriteLine("    text-encoder scale 0: " + differing + " of " + te0.Length + " bytes differ from one strength 1 (need > 0)");
        Check(differing > 0, "the text-encoder scale did not change the image");
        byte[] basePixels;
        using (KilnImage image = model.Generate(settings)) basePixels = image.ToArray();
        foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
        {
            KilnException e = Throws(() => model.WithLoras(new KilnLoraSpec(style, 1f, bad)), KilnStatus.InvalidArgument, "text-encoder scale " + bad);
            Check(e.NativeMessage.Contains("text_encoder_scale"), "message names text_encoder_scale: " + e.NativeMessage);
        }
        Equal(0, model.Loras.Length, "base model's Loras.Length after the refused scales");
        using (KilnImage image = model.Generate(settings)) SamePixels(basePixels, image.ToArray(), "base model after the refused scales");
    }

    static void SdxlSecondPrompt()
    {
        // tests/fixtures/tiny-sdxl beside the tiny-sd fixture: Prompt2 equal to Prompt gives the
        // default's pixels exactly, another Prompt2 changes them; SD 1.x refuses the field.
        var withPrompt2 = Quick("mossy stone brick wall", 5);
        withPrompt2.Steps = 3;
        withPrompt2.Prompt2 = "rusty metal plate";
        KilnException e = Throws(() => model.Generate(withPrompt2), KilnStatus.InvalidArgument, "Prompt2 on SD 1.x");
        Check(e.NativeMessage.Contains("options->prompt_2"), "message names prompt_2: " + e.NativeMessage);
        string sdxlDir = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(modelDir).TrimEnd('/')), "tiny-sdxl");
        using (KilnModel xl = KilnModel.Load(runtime, sdxlDir))
        {
            var plain = withPrompt2.Clone();
            plain.Prompt2 = null;
            var same = withPrompt2.Clone();
            same.Prompt2 = same.Prompt;
            byte[] a, b, c;
            using (KilnImage image = xl.Generate(plain)) a = image.ToArray();
            using (KilnImage image = xl.Generate(same)) b = image.ToArray();
            using (KilnImage image = xl.Generate(withPrompt2)) c = image.ToArray();
            SamePixels(a, b, "Prompt2 = Prompt vs unset");
            int differing = a.Zip(c, (x, y) => x != y).Count(d => d);
            Console.WriteLine("    sdxl Prompt2: " + differing + " of " + a.Length + " bytes differ (need > 0)");
            Check(differing > 0, "Prompt2 did not change the image");
        }
    }

    // ---------------------------------------------------------------- SDXL goldens

    // The parity bound of tests/sdxl.rs for decoded images, applied past 8-bit rounding (the
    // binding returns bytes): what tests/sdxl_embedding.rs and tests/sdxl_handoff.rs check.
    const double ImageBound = 2e-3;

    static string FixturesDir() { return Path.GetDirectoryName(Path.GetFullPath(modelDir).TrimEnd('/')); }

    /// <summary>
    /// A measured value against its bound: printed as "MARGIN id measured bound" for
    /// tests/csharp.rs, which reports it through tests/common's check_margin.
    /// </summary>
    static void Margin(string id, double measured, double bound)
    {
        Console.WriteLine("MARGIN " + id + " " + measured.ToString("R", System.Globalization.CultureInfo.InvariantCulture) + " " + bound.ToString("R", System.Globalization.CultureInfo.InvariantCulture));
        Check(measured <= bound, id + ": measured " + measured + " exceeds the bound " + bound);
    }

    static KilnScheduler SchedulerNamed(string name)
    {
        // Kiln's scheduler names (cases.json "kiln_scheduler") without underscores are the enum's.
        foreach (KilnScheduler s in Enum.GetValues(typeof(KilnScheduler)))
            if (string.Equals(s.ToString(), name.Replace("_", ""), StringComparison.OrdinalIgnoreCase)) return s;
        throw new Exception("no KilnScheduler for " + name);
    }

    /// <summary>A golden case's request: its prompts, steps, guidance, scheduler and recorded draws (null: none).</summary>
    static KilnGenerateSettings GoldenRequest(Dictionary<string, object> c, float[] draws)
    {
        return new KilnGenerateSettings
        {
            Prompt = Goldens.Text(c, "prompt"),
            NegativePrompt = Goldens.Text(c, "negative_prompt"),
            Width = 64,
            Height = 64,
            Steps = (uint)Goldens.Number(c, "steps"),
            GuidanceScale = (float)Goldens.Number(c, "guidance_scale"),
            Scheduler = SchedulerNamed(Goldens.Text(c, "kiln_scheduler")),
            InitialNoise = draws,
        };
    }

    static byte[] Pixels(KilnModel m, KilnGenerateSettings settings)
    {
        using (KilnImage image = m.Generate(settings)) return image.ToArray();
    }

    static void SdxlEmbeddingMatchesTheGolden()
    {
        // tests/fixtures/sdxl-embedding (clip_l + clip_g vectors; tests/sdxl_embedding.rs checks it
        // from Rust against diffusers): through WithAdapters the image is the golden's within the
        // parity bound past 8-bit rounding, the plain model is far from it, and an SD 1.x
        // embedding throws AdapterMismatch with the SDXL model unchanged.
        string folder = Path.Combine(FixturesDir(), "sdxl-embedding");
        Dictionary<string, object> c = Goldens.Case(Path.Combine(folder, "cases.json"), null);
        string name = Goldens.Text(c, "name");
        float[] want = Goldens.ReadNpyF32(Path.Combine(folder, name + ".image.npy"));
        var settings = GoldenRequest(c, Goldens.ReadNpyF32(Path.Combine(folder, name + ".draws.npy")));
        var embedding = new KilnEmbeddingSpec(Path.Combine(folder, Goldens.Text(c, "file")), Goldens.Text(c, "token"));
        using (KilnModel xl = KilnModel.Load(runtime, Path.Combine(FixturesDir(), "tiny-sdxl")))
        {
            byte[] got;
            using (KilnModel embedded = xl.WithAdapters(null, new[] { embedding })) got = Pixels(embedded, settings);
            File.WriteAllBytes(Path.Combine(scratch, "sdxl-embedding.rgba"), got);
            byte[] plain = Pixels(xl, settings);
            double d = Goldens.PastRounding(got, want), control = Goldens.PastRounding(plain, want);
            Console.WriteLine("    sdxl embedding: " + d.ToString("e3") + " from the golden past 8-bit rounding (bound " + ImageBound + "); the plain model " + control.ToString("e3"));
            Margin("csharp::sdxl_embedding::" + name + "::image_abs_past_8bit", d, ImageBound);
            Check(control > ImageBound, "the embedding barely matters here (" + control + "): this test would not catch it dropped");

            string sd1File = Path.Combine(FixturesDir(), "lora", "learned_embeds.safetensors");
            KilnException e = Throws(() => xl.WithAdapters(null, new[] { new KilnEmbeddingSpec(sd1File) }), KilnStatus.AdapterMismatch, "SD 1.x embedding on SDXL");
            Check(e.NativeMessage.Contains("SD 1.x/2.x"), "message names the family: " + e.NativeMessage);
            SamePixels(plain, Pixels(xl, settings), "SDXL model after the refused embedding");
            e = Throws(() => model.WithAdapters(null, new[] { embedding }), KilnStatus.AdapterMismatch, "SDXL embedding on SD 1.x");
            Check(e.NativeMessage.Contains("SDXL embedding"), "message names the file's kind: " + e.NativeMessage);
            using (KilnImage image = model.Generate(Quick("after the refused embedding", 1))) Equal(64, image.Width, "SD 1.x model after the refused embedding");
        }
    }

    static void RefinerHandOffMatchesTheGolden()
    {
        // The base-to-refiner hand-off (tests/sdxl_handoff.rs, case euler_08: its only draw is the
        // initial noise): Refiner + RefinerStart give the golden within the parity bound past 8-bit
        // rounding, the base alone is far from it, a job gives the same pixels even with its
        // refiner handle disposed right after Submit, and bad refiners throw their specific
        // status (or ObjectDisposedException) with both models usable after.
        string golden = Path.Combine(FixturesDir(), "golden", "sdxl_handoff");
        Dictionary<string, object> c = Goldens.Case(Path.Combine(golden, "cases.json"), "euler_08");
        float[] want = Goldens.ReadNpyF32(Path.Combine(golden, "euler_08.image.npy"));
        var settings = GoldenRequest(c, Goldens.ReadNpyF32(Path.Combine(golden, "euler_08.draws.npy")));
        using (KilnModel xl = KilnModel.Load(runtime, Path.Combine(FixturesDir(), "tiny-sdxl")))
        using (KilnModel refiner = KilnModel.Load(runtime, refinerModelDir))
        {
            settings.Refiner = refiner;
            settings.RefinerStart = (float)Goldens.Number(c, "refiner_start");
            byte[] got = Pixels(xl, settings);
            File.WriteAllBytes(Path.Combine(scratch, "sdxl-handoff.rgba"), got);
            var alone = settings.Clone();
            alone.Refiner = null;
            byte[] baseAlone = Pixels(xl, alone);
            double d = Goldens.PastRounding(got, want), control = Goldens.PastRounding(baseAlone, want);
            Console.WriteLine("    hand-off: " + d.ToString("e3") + " from the golden past 8-bit rounding (bound " + ImageBound + "); the base alone " + control.ToString("e3"));
            Margin("csharp::sdxl_handoff::euler_08::image_abs_past_8bit", d, ImageBound);
            Check(control > ImageBound, "the refiner barely matters here (" + control + "): this test would not catch it dropped");

            // A job keeps its own reference to the refiner: the handle may go once Submit returns.
            var queued = settings.Clone();
            queued.Refiner = KilnModel.Load(runtime, refinerModelDir);
            using (KilnJob job = xl.Submit(queued))
            {
                queued.Refiner.Dispose();
                KilnJobStatus s = PollUntilEnded(job);
                Equal(KilnJobState.Succeeded, s.State, "hand-off job state (" + job.ErrorMessage + ")");
                // One job's progress over both stages (the golden's base and refiner U-Net calls).
                int calls = ((List<object>)c["base_timesteps"]).Count + ((List<object>)c["refiner_timesteps"]).Count;
                Equal((uint)calls, s.TotalSteps, "job total steps");
                Equal(s.TotalSteps, s.Step, "job steps done");
                SamePixels(got, job.CopyImage(), "hand-off job (refiner disposed after Submit) vs Generate");
            }
            // A disposed refiner never reaches Kiln.
            try { xl.Generate(queued).Dispose(); throw new Exception("a disposed refiner was accepted"); }
            catch (ObjectDisposedException) { Console.WriteLine("    disposed refiner -> ObjectDisposedException"); }

            var bad = settings.Clone();
            bad.Refiner = model;
            KilnException e = Throws(() => xl.Generate(bad).Dispose(), KilnStatus.InvalidArgument, "SD 1.x refiner");
            Check(e.NativeMessage.Contains("options->refiner"), "message names options->refiner: " + e.NativeMessage);
            foreach (float start in new[] { 0f, 1f, -0.5f, float.NaN, float.PositiveInfinity })
            {
                bad = settings.Clone();
                bad.RefinerStart = start;
                e = Throws(() => xl.Generate(bad).Dispose(), KilnStatus.InvalidArgument, "RefinerStart " + start);
                Check(e.NativeMessage.Contains("options->refiner_start"), "message names options->refiner_start: " + e.NativeMessage);
            }
            bad = settings.Clone();
            bad.Scheduler = KilnScheduler.Heun;
            Throws(() => xl.Generate(bad).Dispose(), KilnStatus.Unsupported, "hand-off with heun");
            bad = Quick("mossy stone brick wall", 3);
            bad.Refiner = refiner;
            Throws(() => model.Generate(bad).Dispose(), KilnStatus.InvalidArgument, "SDXL refiner for an SD 1.x base");
            SamePixels(got, Pixels(xl, settings), "hand-off after the refused requests");
        }
    }

    static void TorchSeedGivesDiffusersImage()
    {
        // tests/fixtures/golden/torch-seed, case euler_a_64 (tests/torch_seed.rs: diffusers called
        // with only generator=torch.Generator("cpu").manual_seed(2026), no latents passed):
        // NoiseGenerator TorchCpu gives its image within the parity bound plus half an 8-bit step
        // (the bound tests/torch_seed.rs applies to the C API's bytes), and a job the same bytes;
        // Kiln's default generator makes another image from the same seed; an unknown generator
        // throws InvalidArgument naming the field, at Generate and at Submit, with the model usable.
        Equal(KilnNoiseGenerator.Kiln, new KilnGenerateSettings().NoiseGenerator, "default NoiseGenerator");
        string golden = Path.Combine(FixturesDir(), "golden", "torch-seed");
        Dictionary<string, object> c = Goldens.Case(Path.Combine(golden, "cases.json"), "euler_a_64");
        Equal(0, ((Dictionary<string, object>)c["scheduler_overrides"]).Count, "euler_a_64 has no scheduler overrides");
        float[] want = Goldens.ReadNpyF32(Path.Combine(golden, Goldens.Text(c, "image")));
        var settings = TorchSeedRequest(c, KilnNoiseGenerator.TorchCpu);
        byte[] got = Pixels(model, settings);
        const double bound = ImageBound + 0.5 / 255;
        double d = Goldens.MaxAbs(got, want);
        var kilnNoise = settings.Clone();
        kilnNoise.NoiseGenerator = KilnNoiseGenerator.Kiln;
        byte[] own = Pixels(model, kilnNoise);
        double control = Goldens.MaxAbs(own, want);
        Console.WriteLine("    torch seed: " + d.ToString("e3") + " from diffusers' image (bound " + bound.ToString("e3") + ", " + Goldens.PastRounding(got, want).ToString("e3") + " past 8-bit rounding); Kiln's noise, same seed: " + control.ToString("e3"));
        Margin("csharp::torch_seed::euler_a_64::image_abs", d, bound);
        Check(control > 0.05, "Kiln's noise gave nearly diffusers' image (" + control + "): the generator was not passed");
        int differing = got.Zip(own, (x, y) => x != y).Count(x => x);
        Console.WriteLine("    torch seed vs Kiln's noise: " + differing + " of " + got.Length + " bytes differ (need > 0)");
        Check(differing > 0, "the same seed gave the same image with both generators");
        using (KilnJob job = model.Submit(settings))
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "TorchCpu job state (" + job.ErrorMessage + ")");
            SamePixels(got, job.CopyImage(), "TorchCpu job vs Generate");
        }

        var bad = settings.Clone();
        bad.NoiseGenerator = (KilnNoiseGenerator)7;
        KilnException e = Throws(() => model.Generate(bad).Dispose(), KilnStatus.InvalidArgument, "NoiseGenerator 7");
        Check(e.NativeMessage.Contains("noise_generator"), "message names noise_generator: " + e.NativeMessage);
        e = Throws(() => model.Submit(bad).Dispose(), KilnStatus.InvalidArgument, "NoiseGenerator 7 at Submit");
        Check(e.NativeMessage.Contains("noise_generator"), "Submit message names noise_generator: " + e.NativeMessage);
        SamePixels(got, Pixels(model, settings), "TorchCpu after the refused generator");
        SamePixels(own, Pixels(model, kilnNoise), "Kiln's noise after the refused generator");
    }

    /// <summary>A torch-seed golden case's request: the seed alone drives <c>generator</c>, no
    /// latents passed (what diffusers was called with).</summary>
    static KilnGenerateSettings TorchSeedRequest(Dictionary<string, object> c, KilnNoiseGenerator generator)
    {
        return new KilnGenerateSettings
        {
            Prompt = Goldens.Text(c, "prompt"),
            NegativePrompt = Goldens.Text(c, "negative_prompt"),
            Width = (uint)Goldens.Number(c, "width"),
            Height = (uint)Goldens.Number(c, "height"),
            Steps = (uint)Goldens.Number(c, "steps"),
            GuidanceScale = (float)Goldens.Number(c, "guidance_scale"),
            Scheduler = SchedulerNamed(Goldens.Text(c, "kiln_scheduler")),
            Seed = (ulong)Goldens.Number(c, "seed"),
            NoiseGenerator = generator,
        };
    }

    static void TorchCudaSeedGivesDiffusersImage()
    {
        // tests/fixtures/golden/torch-cuda-seed, case euler_a_64 (tests/torch_seed.rs: diffusers
        // called with only a torch.Generator("cuda") seeded 2026, AUTOMATIC1111's default "GPU"
        // seeds; the same request as torch-seed's euler_a_64): NoiseGenerator TorchCuda gives its
        // image within the bound TorchCpu's check uses (the parity bound plus half an 8-bit step),
        // and a job the same bytes; TorchCpu makes another image from the same seed.
        string cpuGolden = Path.Combine(FixturesDir(), "golden", "torch-seed");
        string golden = Path.Combine(FixturesDir(), "golden", "torch-cuda-seed");
        Dictionary<string, object> c = Goldens.Case(Path.Combine(golden, "cases.json"), "euler_a_64");
        Dictionary<string, object> cpuCase = Goldens.Case(Path.Combine(cpuGolden, "cases.json"), "euler_a_64");
        List<string> differ = Goldens.DifferingFields(c, cpuCase, "prompt", "negative_prompt", "kiln_scheduler", "steps",
            "guidance_scale", "width", "height", "seed");
        Check(differ.Count == 0, "torch-cuda-seed's euler_a_64 is torch-seed's request, but differs in " + string.Join(", ", differ));
        Equal(0, ((Dictionary<string, object>)c["scheduler_overrides"]).Count, "euler_a_64 has no scheduler overrides");
        float[] want = Goldens.ReadNpyF32(Path.Combine(golden, Goldens.Text(c, "image")));
        var settings = TorchSeedRequest(c, KilnNoiseGenerator.TorchCuda);
        byte[] got = Pixels(model, settings);
        const double bound = ImageBound + 0.5 / 255;
        double d = Goldens.MaxAbs(got, want);
        var cpu = settings.Clone();
        cpu.NoiseGenerator = KilnNoiseGenerator.TorchCpu;
        byte[] cpuPixels = Pixels(model, cpu);
        double control = Goldens.MaxAbs(cpuPixels, want);
        Console.WriteLine("    torch cuda seed: " + d.ToString("e3") + " from diffusers' image (bound " + bound.ToString("e3") + ", " + Goldens.PastRounding(got, want).ToString("e3") + " past 8-bit rounding); TorchCpu, same seed: " + control.ToString("e3"));
        Margin("csharp::torch_cuda_seed::euler_a_64::image_abs", d, bound);
        Check(control > bound, "TorchCpu gave nearly the CUDA golden's image (" + control + "): TorchCuda would not be told apart");
        int differing = got.Zip(cpuPixels, (x, y) => x != y).Count(x => x);
        Console.WriteLine("    torch cuda seed vs TorchCpu: " + differing + " of " + got.Length + " bytes differ (need > 0)");
        Check(differing > 0, "the same seed gave the same image with TorchCuda and TorchCpu");
        using (KilnJob job = model.Submit(settings))
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "TorchCuda job state (" + job.ErrorMessage + ")");
            SamePixels(got, job.CopyImage(), "TorchCuda job vs Generate");
        }
    }

    static void VariationSeedGivesDiffusersImage()
    {
        // tests/fixtures/golden/variation, case euler_a_64_cpu (tests/variation.rs: diffusers
        // started from AUTOMATIC1111's blend of seed 2026's torch CPU draw with variation seed 7's
        // at strength 0.3, every other draw from the seed's generator): VariationSeed and
        // VariationStrength give its image within the bound TorchCpu's check uses (the parity
        // bound plus half an 8-bit step), and a job the same bytes; strength 0 (the default) is
        // the seed's own picture, far from it; strength 2 throws InvalidArgument naming the field,
        // at Generate and at Submit, with the model usable after.
        var defaults = new KilnGenerateSettings();
        Equal(0UL, defaults.VariationSeed, "default VariationSeed");
        Equal(0f, defaults.VariationStrength, "default VariationStrength");
        string golden = Path.Combine(FixturesDir(), "golden", "variation");
        Dictionary<string, object> c = Goldens.Case(Path.Combine(golden, "cases.json"), "euler_a_64_cpu");
        Equal("txt2img", Goldens.Text(c, "kind"), "euler_a_64_cpu kind");
        Equal("torch", Goldens.Text(c, "noise"), "euler_a_64_cpu noise generator");
        float[] want = Goldens.ReadNpyF32(Path.Combine(golden, Goldens.Text(c, "image")));
        var settings = TorchSeedRequest(c, KilnNoiseGenerator.TorchCpu);
        settings.VariationSeed = (ulong)Goldens.Number(c, "variation_seed");
        settings.VariationStrength = (float)Goldens.Number(c, "variation_strength");
        byte[] got = Pixels(model, settings);
        const double bound = ImageBound + 0.5 / 255;
        double d = Goldens.MaxAbs(got, want);
        var plain = settings.Clone();
        plain.VariationStrength = 0;
        byte[] seedOnly = Pixels(model, plain);
        double control = Goldens.MaxAbs(seedOnly, want);
        Console.WriteLine("    variation: " + d.ToString("e3") + " from diffusers' image (bound " + bound.ToString("e3") + ", " + Goldens.PastRounding(got, want).ToString("e3") + " past 8-bit rounding); strength 0, same seeds: " + control.ToString("e3"));
        Margin("csharp::variation::euler_a_64_cpu::image_abs", d, bound);
        Check(control > bound, "strength 0 gave nearly the variation's image (" + control + "): the variation would not be told apart");
        using (KilnJob job = model.Submit(settings))
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "variation job state (" + job.ErrorMessage + ")");
            SamePixels(got, job.CopyImage(), "variation job vs Generate");
        }

        var bad = settings.Clone();
        bad.VariationStrength = 2.0f;
        KilnException e = Throws(() => model.Generate(bad).Dispose(), KilnStatus.InvalidArgument, "VariationStrength 2");
        Check(e.NativeMessage.Contains("variation_strength"), "message names variation_strength: " + e.NativeMessage);
        e = Throws(() => model.Submit(bad).Dispose(), KilnStatus.InvalidArgument, "VariationStrength 2 at Submit");
        Check(e.NativeMessage.Contains("variation_strength"), "Submit message names variation_strength: " + e.NativeMessage);
        SamePixels(got, Pixels(model, settings), "variation after the refused strength");
    }

    static void QuantizedLoadStaysWithinTheSpread()
    {
        // KilnQuantization (kiln_model_load_options.quantization, kiln_model_info.quantization;
        // tests/quantize.rs): a default load reports none, an int8 load of tiny-sd reports int8 and
        // generates golden/quantize's euler_cfg (torch CPU seed) with its RGB image's MEAN |difference|
        // from the int8 reference within twice the reference's own spread (cases.json
        // "int8_jittered_1e-6".image_mean_abs: dynamic int8 rounds activations at run time, so no
        // pixel-exact bound holds), and not the float model's bytes; a SubmitLoad job's int8 model
        // gives the blocking load's bytes; quantization 7 throws InvalidArgument naming the field,
        // at Load, TryLoad and SubmitLoad.
        // kiln_model_info has no *_init: its size (all uint32_t, 44 on every target) is checked here.
        Equal(44, Marshal.SizeOf(typeof(KilnModelInfo)), "KilnModelInfo size (sizeof(kiln_model_info))");
        Equal((uint)KilnQuantization.None, model.Info.quantization, "default load's quantization");
        Equal((uint)KilnQuantization.None, KilnDefaults.ModelLoadOptions().quantization, "kiln_model_load_options_init's quantization");
        string golden = Path.Combine(FixturesDir(), "golden", "quantize");
        Dictionary<string, object> c = Goldens.Case(Path.Combine(golden, "cases.json"), "euler_cfg");
        Equal("tiny-sd", Goldens.Text(c, "fixture"), "euler_cfg fixture");
        float[] want = Goldens.ReadNpyF32(Path.Combine(golden, "euler_cfg.image.npy"));
        // The case's request with no recorded draws: its seed through PyTorch's CPU generator.
        KilnGenerateSettings settings = GoldenRequest(c, null);
        settings.Seed = (ulong)Goldens.Number(c, "seed");
        settings.NoiseGenerator = KilnNoiseGenerator.TorchCpu;
        double bound = 2 * Goldens.Number((Dictionary<string, object>)c["int8_jittered_1e-6"], "image_mean_abs");
        byte[] got;
        using (KilnModel int8 = KilnModel.Load(runtime, modelDir, KilnSeamless.None, null, KilnQuantization.Int8))
        {
            KilnModelInfo info = int8.Info;
            Equal((uint)KilnQuantization.Int8, info.quantization, "int8 load's quantization");
            Equal(64u, info.default_size, "int8 load's default_size");
            got = Pixels(int8, settings);
        }
        double d = Goldens.MeanAbs(got, want);
        byte[] floatPixels = Pixels(model, settings);
        Console.WriteLine("    int8 euler_cfg: mean |difference| " + d.ToString("e3") + " from the int8 reference (bound " + bound.ToString("e3")
            + " = 2 x its 1e-6-jitter spread); the float model " + Goldens.MeanAbs(floatPixels, want).ToString("e3"));
        Margin("csharp::quantize::euler_cfg::image_mean_abs", d, bound);
        int differing = got.Zip(floatPixels, (x, y) => x != y).Count(x => x);
        Console.WriteLine("    int8 vs float: " + differing + " of " + got.Length + " bytes differ (need > 0)");
        Check(differing > 0, "the int8 load gave the float model's bytes: the quantization was not passed");

        using (KilnJob job = KilnModel.SubmitLoad(runtime, modelDir, KilnSeamless.None, null, KilnQuantization.Int8))
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "int8 load job state (" + job.ErrorMessage + ")");
            using (KilnModel loaded = job.TakeModel())
            {
                Equal((uint)KilnQuantization.Int8, loaded.Info.quantization, "int8 load job's model quantization");
                SamePixels(got, Pixels(loaded, settings), "int8 SubmitLoad job's model vs the blocking int8 load");
            }
        }

        var bad = (KilnQuantization)7;
        KilnException e = Throws(() => KilnModel.Load(runtime, modelDir, KilnSeamless.None, null, bad).Dispose(), KilnStatus.InvalidArgument, "quantization 7");
        Check(e.NativeMessage.Contains("options->quantization 7"), "message names options->quantization 7: " + e.NativeMessage);
        KilnModel none;
        KilnError err = KilnModel.TryLoad(runtime, modelDir, KilnSeamless.None, null, bad, out none);
        Equal(KilnStatus.InvalidArgument, err.Status, "TryLoad quantization 7 status");
        Check(none == null && err.Message.Contains("options->quantization 7"), "TryLoad quantization 7: " + err);
        e = Throws(() => KilnModel.SubmitLoad(runtime, modelDir, KilnSeamless.None, null, bad).Dispose(), KilnStatus.InvalidArgument, "quantization 7 at SubmitLoad");
        Check(e.NativeMessage.Contains("options->quantization 7"), "SubmitLoad message names options->quantization 7: " + e.NativeMessage);
        SamePixels(floatPixels, Pixels(model, settings), "float model after the refused quantization");
    }

    static void FusedAttentionMatchesTheExportedGraph()
    {
        // KilnAttention (kiln_model_load_options.attention, kiln_model_info.fused_attention): the
        // default load options say Auto; a default load of tiny-sd (on the CPU provider)
        // runs its 12 U-Net attention layers fused, as Fused does, and Exported none (also from a
        // SubmitLoad job); kiln_model_info at its size before fused_attention (36) leaves the field
        // alone; attention 9 throws InvalidArgument naming options->attention 9 at Load, TryLoad and
        // SubmitLoad. The exported and the fused pictures for one request (64x64, 4 steps, seed 7)
        // differ by float rounding only: at most 2 in any 8-bit channel (not compared byte for byte).
        // StructSizesMatchTheLibrary checks the size against kiln_model_load_options_init's; 32 on 64-bit targets.
        if (IntPtr.Size == 8) Equal(32, Marshal.SizeOf(typeof(KilnModelLoadOptions)), "KilnModelLoadOptions size on 64-bit");
        KilnModelLoadOptions defaults = KilnDefaults.ModelLoadOptions();
        Equal((uint)KilnAttention.Auto, defaults.attention, "kiln_model_load_options_init's attention");
        Equal(0u, defaults.lora_slots, "kiln_model_load_options_init's lora_slots");
        Equal(12u, model.Info.fused_attention, "default load's fused_attention");
        var older = new KilnModelInfo { struct_size = 36, fused_attention = 0xABCD };
        Equal(0u, KilnNative.kiln_model_get_info(model.Handle, ref older), "kiln_model_get_info at struct_size 36");
        Equal(0xABCDu, older.fused_attention, "fused_attention past struct_size 36");
        Equal(64u, older.default_size, "default_size at struct_size 36");

        var settings = new KilnGenerateSettings { Prompt = "weathered oak planks", Seed = 7, Steps = 4, Width = 64, Height = 64 };
        byte[] exportedPixels, forcedPixels;
        using (KilnModel exported = KilnModel.Load(runtime, modelDir, KilnSeamless.None, null, KilnQuantization.None, KilnAttention.Exported))
        {
            Equal(0u, exported.Info.fused_attention, "exported load's fused_attention");
            exportedPixels = Pixels(exported, settings);
        }
        using (KilnModel fused = KilnModel.Load(runtime, modelDir, KilnSeamless.None, null, KilnQuantization.None, KilnAttention.Fused))
        {
            Equal(12u, fused.Info.fused_attention, "fused load's fused_attention");
            forcedPixels = Pixels(fused, settings);
        }
        using (KilnJob job = KilnModel.SubmitLoad(runtime, modelDir, KilnSeamless.None, null, KilnQuantization.None, KilnAttention.Exported))
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "exported load job state (" + job.ErrorMessage + ")");
            using (KilnModel loaded = job.TakeModel())
                Equal(0u, loaded.Info.fused_attention, "exported load job's model fused_attention");
        }
        byte[] fusedPixels = Pixels(model, settings);
        Equal(exportedPixels.Length, fusedPixels.Length, "exported vs fused length");
        int worst = 0, forcedWorst = 0, differing = 0;
        for (int i = 0; i < exportedPixels.Length; i++)
        {
            int e = Math.Abs(exportedPixels[i] - fusedPixels[i]);
            if (e != 0) differing++;
            worst = Math.Max(worst, e);
            forcedWorst = Math.Max(forcedWorst, Math.Abs(exportedPixels[i] - forcedPixels[i]));
        }
        Console.WriteLine("    attention: exported vs fused (default load) max 8-bit difference " + worst + " (bound 2), "
            + differing + " of " + exportedPixels.Length + " bytes differ; exported vs KilnAttention.Fused max " + forcedWorst);
        Margin("csharp::attention::exported_vs_fused::max_8bit_abs", worst, 2);
        Margin("csharp::attention::exported_vs_forced_fused::max_8bit_abs", forcedWorst, 2);

        var bad = (KilnAttention)9;
        KilnException ex = Throws(() => KilnModel.Load(runtime, modelDir, KilnSeamless.None, null, KilnQuantization.None, bad).Dispose(), KilnStatus.InvalidArgument, "attention 9");
        Check(ex.NativeMessage.Contains("options->attention 9"), "message names options->attention 9: " + ex.NativeMessage);
        KilnModel none;
        KilnError err = KilnModel.TryLoad(runtime, modelDir, KilnSeamless.None, null, KilnQuantization.None, bad, out none);
        Equal(KilnStatus.InvalidArgument, err.Status, "TryLoad attention 9 status");
        Check(none == null && err.Message.Contains("options->attention 9"), "TryLoad attention 9: " + err);
        ex = Throws(() => KilnModel.SubmitLoad(runtime, modelDir, KilnSeamless.None, null, KilnQuantization.None, bad).Dispose(), KilnStatus.InvalidArgument, "attention 9 at SubmitLoad");
        Check(ex.NativeMessage.Contains("options->attention 9"), "SubmitLoad message names options->attention 9: " + ex.NativeMessage);
        SamePixels(fusedPixels, Pixels(model, settings), "default model after the refused attention");
    }

    static void LoraSlotsFeedTheLoras()
    {
        // LoRA slots (kiln_model_load_options.lora_slots, kiln_model_info.lora_slots): the default
        // load options say 0 (the field that was reserved: the struct stays 32 bytes on 64-bit
        // targets) and a default load of tiny-sd reports no slotted layer; kiln_model_info at its
        // size before lora_slots (40) leaves the field alone; lora_slots 2 (the raw struct) is
        // INVALID_ARGUMENT naming options->lora_slots; loraSlots true (Load, TryLoad, SubmitLoad)
        // gives the U-Net's 121 layers a slot. Such a model's plain pictures, and its empty LoRA
        // set's, are the unslotted model's bit for bit; WithLoras of the style LoRA at 1 feeds it: the
        // pictures change, the same request twice gives the same bytes, SubmitWithLoras gives
        // WithLoras' bytes, and the merged LoRA's pictures (of the unslotted model) are the same to
        // float rounding: at most 2 in any 8-bit channel (64x64, 4 steps, seed 11; a MARGIN line).
        const uint slottedLayers = 121;
        if (IntPtr.Size == 8) Equal(32, Marshal.SizeOf(typeof(KilnModelLoadOptions)), "KilnModelLoadOptions size on 64-bit");
        Equal(44, Marshal.SizeOf(typeof(KilnModelInfo)), "KilnModelInfo size");
        Equal(40, (int)Marshal.OffsetOf(typeof(KilnModelInfo), "lora_slots"), "offset of kiln_model_info.lora_slots");
        Equal(0u, KilnDefaults.ModelLoadOptions().lora_slots, "kiln_model_load_options_init's lora_slots");
        KilnModelInfo info = model.Info;
        Equal(0u, info.lora_slots, "default load's lora_slots");
        var older = new KilnModelInfo { struct_size = 40, lora_slots = 0xABCD };
        Equal(0u, KilnNative.kiln_model_get_info(model.Handle, ref older), "kiln_model_get_info at struct_size 40");
        Equal(0xABCDu, older.lora_slots, "lora_slots past struct_size 40");
        Equal(info.default_size, older.default_size, "default_size at struct_size 40");
        Equal(info.fused_attention, older.fused_attention, "fused_attention at struct_size 40");

        // Only 0 and 1 are lora_slots values; the binding's bool cannot say 2, the C struct can.
        KilnModelLoadOptions raw = KilnDefaults.ModelLoadOptions();
        raw.lora_slots = 2;
        IntPtr refused;
        uint status = KilnNative.kiln_model_load_with(runtime.Handle, Utf8.ToNative(modelDir), ref raw, out refused);
        string message = KilnStatusNames.LastErrorMessage();
        Console.WriteLine("    lora_slots 2 -> " + KilnStatusNames.Name((KilnStatus)status) + ": " + message);
        Equal(KilnStatus.InvalidArgument, (KilnStatus)status, "lora_slots 2 status");
        Check(refused == IntPtr.Zero, "no model for lora_slots 2");
        Check(message.Contains("lora_slots"), "message names lora_slots: " + message);

        string style = Path.Combine(FixturesDir(), "lora", "style.kohya.safetensors");
        var settings = new KilnGenerateSettings { Prompt = "mossy stone brick wall", Seed = 11, Steps = 4, Width = 64, Height = 64 };
        byte[] plain = Pixels(model, settings), merged;
        using (KilnModel m = model.WithLoras(new KilnLoraSpec(style, 1f))) merged = Pixels(m, settings);
        byte[] fed;
        using (KilnModel slotted = KilnModel.Load(runtime, modelDir, KilnSeamless.None, null, KilnQuantization.None, KilnAttention.Auto, true))
        {
            Equal(slottedLayers, slotted.Info.lora_slots, "slotted load's lora_slots");
            Console.WriteLine("    lora_slots: " + slotted.Info.lora_slots + " U-Net layers with a LoRA slot");
            SamePixels(plain, Pixels(slotted, settings), "slotted model vs the unslotted one");
            using (KilnModel empty = slotted.WithLoras()) SamePixels(plain, Pixels(empty, settings), "slotted model's empty LoRA set vs the unslotted model");
            using (KilnModel styled = slotted.WithLoras(new KilnLoraSpec(style, 1f)))
            {
                Equal(slottedLayers, styled.Info.lora_slots, "fed LoRA set's lora_slots");
                KilnLoraSpec[] listed = styled.Loras;
                Check(listed.Length == 1 && listed[0].Path.EndsWith("style.kohya.safetensors"), "fed LoRA set's Loras");
                fed = Pixels(styled, settings);
                SamePixels(fed, Pixels(styled, settings), "the fed LoRA's request twice");
            }
            using (KilnJob job = slotted.SubmitWithLoras(new[] { new KilnLoraSpec(style, 1f) }))
            {
                KilnJobStatus s = PollUntilEnded(job);
                Equal(KilnJobState.Succeeded, s.State, "SubmitWithLoras on the slotted model (" + job.ErrorMessage + ")");
                using (KilnModel queued = job.TakeModel()) SamePixels(fed, Pixels(queued, settings), "SubmitWithLoras' fed LoRA vs WithLoras'");
            }
        }
        int differing = 0, worst = 0;
        for (int i = 0; i < plain.Length; i++)
        {
            if (plain[i] != fed[i]) differing++;
            worst = Math.Max(worst, Math.Abs(fed[i] - merged[i]));
        }
        Console.WriteLine("    lora_slots: the fed style LoRA changes " + differing + " of " + plain.Length
            + " bytes (need > 0); fed vs merged max 8-bit difference " + worst + " (bound 2)");
        Check(differing > 0, "the fed LoRA did not change the image");
        Margin("csharp::lora_slots::fed_vs_merged::max_8bit_abs", worst, 2);

        KilnModel tried;
        KilnError err = KilnModel.TryLoad(runtime, modelDir, KilnSeamless.None, null, KilnQuantization.None, KilnAttention.Auto, true, out tried);
        Check(err.Ok && tried != null, "TryLoad with LoRA slots: " + err);
        using (tried) Equal(slottedLayers, tried.Info.lora_slots, "TryLoad's lora_slots");
        using (KilnJob job = KilnModel.SubmitLoad(runtime, modelDir, KilnSeamless.None, null, KilnQuantization.None, KilnAttention.Auto, true))
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "slotted load job state (" + job.ErrorMessage + ")");
            using (KilnModel loaded = job.TakeModel())
                Equal(slottedLayers, loaded.Info.lora_slots, "slotted load job's model lora_slots");
        }
    }

    static void Utf8PromptsAndPaths()
    {
        // Non-ASCII text must reach Kiln as UTF-8 (Windows .NET's ANSI marshalling would not).
        string dir = Path.Combine(scratch, "ünïcödé-текстуры-石");
        Directory.CreateDirectory(dir);
        string png = Path.Combine(dir, "tëxture-石.png");
        using (KilnImage image = model.Generate(Quick("mossy stone 石垣 wall, ümlaut", 3)))
            image.WritePng(png);
        Check(File.Exists(png) && new FileInfo(png).Length > 100, "PNG at a UTF-8 path: " + png);
        // The same prompt as UTF-8 and as a different string must give different images,
        // and the same one twice the same image: the bytes arrive intact.
        byte[] a = model.Generate(Quick("石垣", 3)).ToArray();
        byte[] b = model.Generate(Quick("石垣", 3)).ToArray();
        byte[] c = model.Generate(Quick("石", 3)).ToArray();
        SamePixels(a, b, "same UTF-8 prompt twice");
        Check(a.Zip(c, (x, y) => x != y).Any(d => d), "different prompts gave the same image");
        try { Utf8.ToNative("a\0b"); throw new Exception("embedded NUL accepted"); }
        catch (ArgumentException) { }
        try { model.Submit(Quick("a\0b", 1)); throw new Exception("Submit accepted an embedded NUL"); }
        catch (ArgumentException) { }
    }

    static void ErrorStatuses()
    {
        var e = Throws(() => KilnModel.Load(runtime, Path.Combine(scratch, "no-such-model")), KilnStatus.ModelNotFound, "missing model");
        Check(e.NativeMessage.Contains("no-such-model"), "message names the folder");
        KilnModel none;
        KilnError err = KilnModel.TryLoad(runtime, "/nonexistent/model", KilnSeamless.None, null, out none);
        Equal(KilnStatus.ModelNotFound, err.Status, "TryLoad status");
        Check(none == null && err.Message.Contains("/nonexistent/model"), "TryLoad: " + err);
        Throws(() => model.Generate(new KilnGenerateSettings { Prompt = "x", Width = 60, Height = 64, Steps = 2 }), KilnStatus.InvalidSize, "width not a multiple");
        Throws(() => model.GenerateInto(Quick("x", 1), new byte[64 * 64 * 4 - 1]), KilnStatus.BufferTooSmall, "buffer one byte short");
        KilnError tryErr = model.TryGenerateInto(Quick("x", 1), null);
        Equal(KilnStatus.NullArgument, tryErr.Status, "null buffer");
        var syntax = Throws(() => model.Generate(new KilnGenerateSettings { Prompt = "(unclosed", PromptWeighting = true, Steps = 2 }), KilnStatus.InvalidArgument, "bad weighting syntax");
        Check(syntax.NativeMessage.Contains("column"), "syntax message names the column");
        Throws(() => model.Generate(new KilnGenerateSettings { Prompt = "x", Scheduler = (KilnScheduler)99, Steps = 2 }), KilnStatus.InvalidArgument, "unknown scheduler");
        Throws(() => KilnImage.Create(0, 4, new byte[64]), KilnStatus.InvalidArgument, "zero-width image");
        Throws(() => KilnImage.Create(4, 4, new byte[63]), KilnStatus.BufferTooSmall, "short image buffer");
        Throws(() => new KilnRuntime(new KilnRuntimeSettings { OnnxRuntimePath = Path.Combine(scratch, "libonnxruntime-missing.so") }), KilnStatus.RuntimeLoadFailed, "another ONNX Runtime path");
        // The model stays usable after every failure above.
        using (KilnImage ok = model.Generate(Quick("after errors", 1))) Equal(64, ok.Width, "generate after errors");
        // A disposed handle is refused by the marshaller before it reaches Kiln.
        KilnImage gone = KilnImage.Create(2, 2, new byte[16]);
        gone.Dispose();
        gone.Dispose();
        try { var w = gone.Width; throw new Exception("used a disposed image: " + w); }
        catch (ObjectDisposedException) { }
    }

    static void ImagePostProcessing()
    {
        byte[] flat = Enumerable.Repeat((byte)200, 16 * 16 * 4).ToArray();
        using (KilnImage img = KilnImage.Create(16, 16, flat))
        {
            float score = img.SeamScore(KilnSeamless.X);
            Console.WriteLine("    flat image seam score " + score + " (expected 1)");
            Equal(1f, score, "flat seam score");
            Throws(() => img.SeamScore(KilnSeamless.XY), KilnStatus.InvalidArgument, "seam score axis XY");
            KilnImage h, n;
            img.MaterialMaps(out h, out n);
            using (h) using (n)
            {
                byte[] np = n.ToArray();
                Equal(16, h.Width, "height map width");
                Check(np[0] == 128 && np[1] == 128 && np[2] == 255, "flat normal is (128,128,255), got " + np[0] + "," + np[1] + "," + np[2]);
            }
            using (KilnImage art = img.PixelArt()) Equal(2, art.Width, "pixel art of 16 px with 8-px cells");
            var bad = KilnDefaults.PixelArtOptions();
            bad.cell = 0;
            Throws(() => img.PixelArt(bad), KilnStatus.InvalidArgument, "pixel art cell 0");
        }
    }

    static void TextureHelpers()
    {
        byte[] start = model.Generate(Quick("cobblestone", 11)).ToArray();
        var settings = Quick("cobblestone", 11);
        settings.InitImage = start;
        settings.InitImageWidth = 64;
        settings.InitImageHeight = 64;
        settings.InitImageChannels = 4;
        settings.Strength = 1.0f;
        using (KilnImage wide = model.ExtendTexture(settings, 0, 16, 0, 0))
        {
            Equal(80, wide.Width, "extended width");
            Equal(64, wide.Height, "extended height");
            // The original pixels are kept exactly.
            byte[] px = wide.ToArray();
            int differing = 0;
            for (int y = 0; y < 64; y++) for (int x = 0; x < 256; x++) if (px[y * 320 + x] != start[y * 256 + x]) differing++;
            Console.WriteLine("    extend: " + differing + " of " + (64 * 256) + " original bytes changed (bound: 0)");
            Equal(0, differing, "original pixels changed");
        }
        using (KilnImage tile = model.MakeTileable(settings, 8))
        {
            Equal(64, tile.Width, "tileable width");
            // Outside the band around the central cross, the result is the input offset by half.
            byte[] px = tile.ToArray();
            int differing = 0;
            for (int y = 0; y < 64; y++)
                for (int x = 0; x < 64; x++)
                {
                    if (Math.Abs(y - 32) < 12 || Math.Abs(x - 32) < 12) continue;
                    for (int c = 0; c < 4; c++) if (px[(y * 64 + x) * 4 + c] != start[(((y + 32) % 64) * 64 + (x + 32) % 64) * 4 + c]) differing++;
                }
            Console.WriteLine("    make tileable (band 8): " + differing + " bytes differ from the half-offset input farther than 11 px from the seams (bound: 0)");
            Equal(0, differing, "pixels outside the band");
        }
        Throws(() => model.MakeTileable(settings, 0), KilnStatus.InvalidArgument, "band 0");
        byte[] green = new byte[32 * 32 * 4];
        for (int i = 0; i < green.Length; i += 4) { green[i] = 0; green[i + 1] = 255; green[i + 2] = 0; green[i + 3] = 255; }
        for (int y = 8; y < 16; y++) for (int x = 8; x < 20; x++) { int i = (y * 32 + x) * 4; green[i] = 200; green[i + 1] = 40; green[i + 2] = 40; }
        using (KilnImage img = KilnImage.Create(32, 32, green))
        {
            KilnRect bbox;
            using (KilnImage sprite = model.MakeSprite(img, out bbox))
            {
                Console.WriteLine("    sprite bbox " + bbox.x + "," + bbox.y + " " + bbox.width + "x" + bbox.height + " (expected 8,8 12x8)");
                Check(bbox.x == 8 && bbox.y == 8 && bbox.width == 12 && bbox.height == 8, "sprite bounding box");
                Equal((byte)0, sprite.ToArray()[3], "background alpha");
            }
        }
        // A disposed image is refused before the call and does not keep the model open (Mono's
        // marshaller keeps its reference to a first handle when it fails on the second).
        KilnModel second = KilnModel.Load(runtime, modelDir);
        KilnImage gone = KilnImage.Create(2, 2, new byte[16]);
        gone.Dispose();
        KilnRect unused;
        try { second.MakeSprite(gone, out unused).Dispose(); throw new Exception("made a sprite of a disposed image"); }
        catch (ObjectDisposedException) { }
        second.Dispose();
        Check(second.Handle.IsClosed, "the model's handle is still open after Dispose");
    }

    /// <summary>The binding's job states Kiln may still call back for (JobCallbackState.Live, by reflection).</summary>
    static object[] LiveJobStates()
    {
        Type t = typeof(KilnNative).Assembly.GetType("Kiln.Interop.JobCallbackState");
        var live = (Array)t.GetMethod("Live", BindingFlags.Static | BindingFlags.NonPublic).Invoke(null, null);
        return live.Cast<object>().ToArray();
    }

    /// <summary>A submit that throws must leave no job: nothing new the binding tracks, no event.</summary>
    static void NoNewJob(object[] before, int events, string what)
    {
        Check(LiveJobStates().All(x => before.Contains(x)), what + ": the binding tracks a job for a refused submit");
        Equal(0, events, what + ": events for a refused submit");
    }

    /// <summary>Polls until the job runs with at least one step done (or ends).</summary>
    static KilnJobStatus PollUntilRunning(KilnJob job)
    {
        DateTime giveUp = DateTime.UtcNow.AddMinutes(2);
        while (true)
        {
            KilnJobStatus s = job.Poll();
            if (s.Ended || (s.State == KilnJobState.Running && s.Step >= 1)) return s;
            if (DateTime.UtcNow > giveUp) throw new Exception("job did not start within 2 minutes");
            Thread.Sleep(1);
        }
    }

    static void TextureJobs()
    {
        // TextureHelpers' inputs as jobs: each gives the blocking call's bytes, with progress and
        // previews as a generation job's; bad arguments throw at submit and queue nothing; a job
        // outlives its model's Dispose.
        byte[] start = model.Generate(Quick("cobblestone", 11)).ToArray();
        var settings = Quick("cobblestone", 11);
        settings.InitImage = start;
        settings.InitImageWidth = 64;
        settings.InitImageHeight = 64;
        settings.InitImageChannels = 4;
        settings.Strength = 1.0f;
        byte[] wide, tile;
        using (KilnImage img = model.ExtendTexture(settings, 0, 16, 0, 0)) wide = img.ToArray();
        using (KilnImage img = model.MakeTileable(settings, 8)) tile = img.ToArray();
        var js = new KilnJobSettings { PreviewInterval = 2 };
        using (KilnJob job = model.SubmitExtendTexture(settings, 0, 16, 0, 0, js))
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "extend job state (" + job.ErrorMessage + ")");
            Console.WriteLine("    extend job: step " + s.Step + " of " + s.TotalSteps + ", preview at " + s.PreviewStep + " " + s.PreviewWidth + "x" + s.PreviewHeight);
            Check(s.TotalSteps >= 4 && s.Step == s.TotalSteps, "extend job steps");
            Check(s.PreviewStep == s.TotalSteps && s.PreviewWidth == 10 && s.PreviewHeight == 8, "extend job preview (latent size 10x8)");
            int w, h;
            job.ImageSize(out w, out h);
            Check(w == 80 && h == 64, "extend job size " + w + "x" + h);
            SamePixels(wide, job.CopyImage(), "SubmitExtendTexture job vs ExtendTexture");
        }
        using (KilnJob job = model.SubmitMakeTileable(settings, 8, js))
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "tileable job state (" + job.ErrorMessage + ")");
            Check(s.TotalSteps >= 4 && s.Step == s.TotalSteps, "tileable job steps");
            Check(s.PreviewStep == s.TotalSteps && s.PreviewWidth == 8 && s.PreviewHeight == 8, "tileable job preview");
            SamePixels(tile, job.CopyImage(), "SubmitMakeTileable job vs MakeTileable");
        }

        // Checked at submit: each bad argument throws its status and leaves no job.
        int events = 0;
        var counting = new KilnJobSettings { OnEvent = ev => Interlocked.Increment(ref events) };
        object[] before = LiveJobStates();
        Throws(() => model.SubmitMakeTileable(settings, 0, counting).Dispose(), KilnStatus.InvalidArgument, "SubmitMakeTileable band 0");
        Throws(() => model.SubmitMakeTileable(settings, 32, counting).Dispose(), KilnStatus.InvalidArgument, "SubmitMakeTileable band 32 on 64 px");
        Throws(() => model.SubmitExtendTexture(settings, 5, 0, 0, 0, counting).Dispose(), KilnStatus.InvalidSize, "SubmitExtendTexture to 69 px");
        KilnException e = Throws(() => model.SubmitExtendTexture(Quick("no picture", 1), 0, 16, 0, 0, counting).Dispose(), KilnStatus.InvalidArgument, "SubmitExtendTexture without an init image");
        Check(e.NativeMessage.Contains("init_image"), "message names init_image: " + e.NativeMessage);
        Throws(() => model.SubmitMakeTileable(Quick("no picture", 1), 8, counting).Dispose(), KilnStatus.InvalidArgument, "SubmitMakeTileable without an init image");
        try { model.SubmitExtendTexture(null, 0, 16, 0, 0).Dispose(); throw new Exception("null settings accepted"); }
        catch (ArgumentNullException) { }
        Thread.Sleep(20);
        NoNewJob(before, Volatile.Read(ref events), "texture submits");

        // The model disposed right after submit: the jobs hold what they need of it; a disposed
        // model throws before reaching Kiln.
        KilnModel second = KilnModel.Load(runtime, modelDir);
        KilnJob extendJob = second.SubmitExtendTexture(settings, 0, 16, 0, 0);
        KilnJob tileJob = second.SubmitMakeTileable(settings, 8);
        second.Dispose();
        Check(second.Handle.IsClosed, "the model's handle is still open after Dispose");
        using (extendJob)
        using (tileJob)
        {
            Equal(KilnJobState.Succeeded, PollUntilEnded(extendJob).State, "extend job after its model's Dispose");
            Equal(KilnJobState.Succeeded, PollUntilEnded(tileJob).State, "tileable job after its model's Dispose");
            SamePixels(wide, extendJob.CopyImage(), "extend job of a disposed model vs ExtendTexture");
            SamePixels(tile, tileJob.CopyImage(), "tileable job of a disposed model vs MakeTileable");
        }
        before = LiveJobStates();
        try { second.SubmitExtendTexture(settings, 0, 16, 0, 0).Dispose(); throw new Exception("submitted on a disposed model"); }
        catch (ObjectDisposedException) { }
        try { second.SubmitMakeTileable(settings, 8).Dispose(); throw new Exception("submitted on a disposed model"); }
        catch (ObjectDisposedException) { }
        NoNewJob(before, 0, "submits on a disposed model");
    }

    static void CallbacksFireOnAWorkerThread()
    {
        var events = new List<KilnJobEventArgs>();
        var threads = new HashSet<int>();
        int main = Thread.CurrentThread.ManagedThreadId;
        var js = new KilnJobSettings
        {
            PreviewInterval = 2,
            OnEvent = ev => { lock (events) { events.Add(ev); threads.Add(Thread.CurrentThread.ManagedThreadId); } },
        };
        using (KilnJob job = model.Submit(Quick("callback test", 5), js))
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "state");
            // Finished is delivered right after the state changes: wait for it.
            DateTime until = DateTime.UtcNow.AddSeconds(60);
            while (true)
            {
                lock (events) if (events.Any(e => e.Kind == KilnJobEventKind.Finished)) break;
                if (DateTime.UtcNow > until) throw new Exception("no Finished event");
                Thread.Sleep(2);
            }
            lock (events)
            {
                var progress = events.Where(e => e.Kind == KilnJobEventKind.Progress).ToList();
                var previews = events.Where(e => e.Kind == KilnJobEventKind.Preview).ToList();
                Console.WriteLine("    " + progress.Count + " progress, " + previews.Count + " preview, " + events.Count(e => e.Kind == KilnJobEventKind.Finished) + " finished events; threads " + string.Join(",", threads) + " (main " + main + ")");
                Equal((int)s.TotalSteps, progress.Count, "progress events");
                for (int i = 0; i < progress.Count; i++) Equal((uint)(i + 1), progress[i].Step, "progress step order");
                Check(previews.Count >= 1 && previews.All(p => p.PreviewPixels != null && p.PreviewPixels.Length == p.PreviewWidth * p.PreviewHeight * 4 && p.PreviewWidth > 0), "previews carry pixels");
                Equal(KilnJobState.Succeeded, events.Last().State, "Finished state");
                Equal(KilnJobEventKind.Finished, events.Last().Kind, "last event");
                Check(events.All(e => e.JobId == job.Id), "events carry the job id");
                Check(!threads.Contains(main), "a callback ran on the main thread");
            }
            // Everything the callback said can be polled too.
            uint step;
            byte[] preview = new byte[s.PreviewWidth * s.PreviewHeight * 4];
            Equal(KilnStatus.Ok, job.TryCopyPreview(preview, out step).Status, "copy preview");
            Equal(s.PreviewStep, step, "preview step");
        }
    }

    static void ThrowingHandlersNeverReachNativeCode()
    {
        long before = KilnCallbacks.CaughtCount;
        int thrown = 0;
        var finished = new ManualResetEvent(false);
        var js = new KilnJobSettings
        {
            OnEvent = ev =>
            {
                Interlocked.Increment(ref thrown);
                if (ev.Kind == KilnJobEventKind.Finished) finished.Set();
                throw new InvalidOperationException("handler bug " + ev.Kind);
            },
        };
        using (KilnJob job = model.Submit(Quick("throwing handler", 6), js))
        {
            Equal(KilnJobState.Succeeded, PollUntilEnded(job).State, "job with a throwing handler");
            Check(finished.WaitOne(60000), "Finished event");
            // The Finished handler's exception is reported just after it set the event.
            DateTime until = DateTime.UtcNow.AddSeconds(60);
            while (KilnCallbacks.CaughtCount - before < Volatile.Read(ref thrown) && DateTime.UtcNow < until) Thread.Sleep(2);
            long caught = KilnCallbacks.CaughtCount - before;
            Console.WriteLine("    handler threw " + thrown + " times, trampolines caught " + caught);
            Check(thrown >= 5, "handler ran " + thrown + " times");
            Equal((long)thrown, caught, "exceptions caught");
            Check(job.HandlerException is InvalidOperationException, "HandlerException kept");
        }
        // A throwing log handler: the load logs, the exception is caught, the load works.
        long beforeLog = KilnCallbacks.CaughtCount;
        var lines = new List<string>();
        using (var rt = new KilnRuntime(new KilnRuntimeSettings { Log = (level, text) => { lock (lines) lines.Add(level + ": " + text); throw new Exception("log handler bug"); } }))
        using (KilnModel m = KilnModel.Load(rt, modelDir))
        {
            lock (lines)
            {
                Console.WriteLine("    " + lines.Count + " log lines, first: " + lines.FirstOrDefault());
                Check(lines.Count >= 1, "no log lines");
                Check(lines.All(l => l.Length > 7), "empty log line");
            }
            Check(KilnCallbacks.CaughtCount - beforeLog >= lines.Count, "log exceptions caught");
            using (KilnImage img = m.Generate(Quick("logged", 1))) Equal(64, img.Width, "generate after a throwing logger");
        }
    }

    static void CancelAndStaleIds()
    {
        // A long job queued behind nothing: cancel it and poll until it reports Cancelled.
        var finished = new ManualResetEvent(false);
        KilnJobState endState = KilnJobState.Queued;
        var js = new KilnJobSettings { OnEvent = ev => { if (ev.Kind == KilnJobEventKind.Finished) { endState = ev.State; finished.Set(); } } };
        ulong id;
        using (KilnJob job = model.Submit(new KilnGenerateSettings { Prompt = "long", Steps = 500 }, js))
        {
            id = job.Id;
            job.Cancel();
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Cancelled, s.State, "state after cancel");
            Check(job.ErrorMessage.Length > 0, "cancelled job has a message");
            Console.WriteLine("    cancelled at step " + s.Step + " of " + s.TotalSteps + ": " + job.ErrorMessage);
            KilnError copy = job.TryCopyImage(new byte[64 * 64 * 4]);
            Equal(KilnStatus.InvalidArgument, copy.Status, "copy image of a cancelled job");
            uint step;
            Equal(KilnStatus.Busy, job.TryCopyPreview(new byte[16], out step).Status, "preview without a preview interval");
        }
        Check(finished.WaitOne(60000), "Finished event");
        Equal(KilnJobState.Cancelled, endState, "Finished event state");
        WaitUntilFreed(id);
        var p = new KilnJobProgress { struct_size = (uint)Marshal.SizeOf(typeof(KilnJobProgress)) };
        Equal((uint)KilnStatus.InvalidHandle, KilnNative.kiln_job_poll(id, ref p), "poll of a freed id");
        Equal((uint)KilnStatus.InvalidHandle, KilnNative.kiln_job_free(id), "double free");
    }

    static void WaitUntilFreed(ulong id)
    {
        // Dispose frees the id once Kiln has delivered Finished (on its worker thread).
        var p = new KilnJobProgress { struct_size = (uint)Marshal.SizeOf(typeof(KilnJobProgress)) };
        DateTime until = DateTime.UtcNow.AddSeconds(60);
        while (KilnNative.kiln_job_poll(id, ref p) != (uint)KilnStatus.InvalidHandle)
        {
            if (DateTime.UtcNow > until) throw new Exception("job " + id + " was never freed");
            Thread.Sleep(2);
        }
    }

    static void DisposeWhileRunning()
    {
        // Disposing a running job with a handler: Kiln keeps calling the handler until
        // Finished, so the binding frees the id and the GCHandle only then.
        int seen = 0;
        var done = new ManualResetEvent(false);
        var js = new KilnJobSettings { OnEvent = ev => { Interlocked.Increment(ref seen); if (ev.Kind == KilnJobEventKind.Finished) done.Set(); } };
        var jobs = new List<ulong>();
        for (int i = 0; i < 3; i++)
        {
            KilnJob job = model.Submit(new KilnGenerateSettings { Prompt = "disposed " + i, Steps = 200 }, js);
            jobs.Add(job.Id);
            job.Dispose();
        }
        foreach (ulong id in jobs) WaitUntilFreed(id);
        Check(done.WaitOne(60000), "Finished after Dispose");
        // An abandoned job is released by its finalizer.
        ulong abandoned = SubmitAndForget();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        WaitUntilFreed(abandoned);
        Console.WriteLine("    3 disposed + 1 finalized job freed after Finished; " + seen + " events delivered");
    }

    static void CancelAllStopsEveryJob()
    {
        // What the Editor does before a script reload: every job gets its Finished event.
        var finished = new List<KilnJobState>();
        var js = new KilnJobSettings { OnEvent = ev => { if (ev.Kind == KilnJobEventKind.Finished) lock (finished) finished.Add(ev.State); } };
        var jobs = new List<KilnJob>();
        for (int i = 0; i < 3; i++) jobs.Add(model.Submit(new KilnGenerateSettings { Prompt = "reload " + i, Steps = 300 }, js));
        int left = KilnJob.CancelAll(60000);
        Equal(0, left, "jobs left running");
        lock (finished)
        {
            Console.WriteLine("    Finished states: " + string.Join(",", finished));
            Equal(3, finished.Count, "Finished events");
            Check(finished.All(s => s == KilnJobState.Cancelled), "all cancelled");
        }
        foreach (KilnJob j in jobs) j.Dispose();
        foreach (KilnJob j in jobs) WaitUntilFreed(j.Id);
        Equal(0, KilnJob.CancelAll(0), "nothing left after dispose");
    }

    static ulong SubmitAndForget()
    {
        return model.Submit(new KilnGenerateSettings { Prompt = "forgotten", Steps = 200 }).Id;
    }

    static void ControlNetShapesTheImage()
    {
        // The fixture with tests/fixtures/controlnet added (CONTROLNET_MODEL_DIR): a painted
        // height map's Canny edges change the image; Kiln's own Canny preprocessing of the
        // painted map gives the same pixels as passing the edges; a missing ControlNet throws
        // MODEL_NOT_FOUND and the model stays usable.
        const int size = 64;
        var painted = new byte[size * size * 4];
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
            {
                int dx = x - 32, dy = y - 30, i = (y * size + x) * 4;
                byte v = dx * dx + dy * dy < 18 * 18 ? (byte)230 : (byte)(x * 2);
                painted[i] = painted[i + 1] = painted[i + 2] = v;
                painted[i + 3] = 255;
            }
        using (KilnModel cn = KilnModel.Load(runtime, controlNetModelDir))
        using (KilnImage height = KilnImage.Create(size, size, painted))
        using (KilnImage edges = height.Canny(100f, 200f))
        using (KilnImage depth = height.HeightToDepth())
        {
            byte[] e = edges.ToArray(), d = depth.ToArray();
            int white = 0, lo = 255, hi = 0;
            for (int i = 0; i < size * size; i++)
            {
                if (e[i * 4] == 255) white++;
                lo = Math.Min(lo, d[i * 4]);
                hi = Math.Max(hi, d[i * 4]);
            }
            Console.WriteLine("    " + white + " edge pixels; depth spans " + lo + ".." + hi);
            Check(white > 0 && white < size * size / 2, "edge count " + white);
            Check(lo == 0 && hi == 255, "depth range " + lo + ".." + hi);
            Throws(() => height.Canny(-1f, 200f), KilnStatus.InvalidArgument, "negative Canny threshold");

            var settings = Quick("mossy stone brick wall", 7);
            byte[] plain, guided, byName;
            using (KilnImage image = cn.Generate(settings)) plain = image.ToArray();
            settings.Controls = new[] { new KilnControlSpec("tiny", edges, 0.8f) };
            using (KilnImage image = cn.Generate(settings)) guided = image.ToArray();
            settings.Controls = new[] { new KilnControlSpec("tiny", height, 0.8f, KilnControlPreprocess.Canny) };
            using (KilnImage image = cn.Generate(settings)) byName = image.ToArray();
            int differing = plain.Zip(guided, (x, y) => x != y).Count(b => b);
            Console.WriteLine("    controlnet: " + differing + " of " + plain.Length + " bytes differ from the uncontrolled image (need > 0)");
            Check(differing > 0, "the ControlNet did not change the image");
            SamePixels(guided, byName, "Canny preprocessing by name vs the edges image");

            settings.Controls = new[] { new KilnControlSpec("no-such-controlnet", edges) };
            KilnException ex = Throws(() => cn.Generate(settings).Dispose(), KilnStatus.ModelNotFound, "missing ControlNet");
            Check(ex.NativeMessage.Contains("tiny"), "the message lists the model's ControlNets: " + ex.NativeMessage);
            settings.Controls = new[] { new KilnControlSpec("tiny", edges, 0.8f) };
            using (KilnImage image = cn.Generate(settings)) SamePixels(guided, image.ToArray(), "ControlNet after the error");
            // Jobs copy the controls before queueing.
            using (KilnJob job = cn.Submit(settings))
            {
                Equal(KilnJobState.Succeeded, PollUntilEnded(job).State, "ControlNet job state");
                SamePixels(guided, job.CopyImage(), "ControlNet job vs blocking generate");
            }
        }
    }

    // ---------------------------------------------------------------- upscaler

    // tests/upscaler.rs's bound on the float planes (1e-5, a hundred times below one 8-bit
    // step), applied past 8-bit rounding: the binding returns bytes.
    const double UpscalerBound = 1e-5;

    static string UpscalerDir() { return Path.Combine(FixturesDir(), "upscaler"); }

    /// <summary>tests/fixtures/upscaler/image.npy: 24x20 RGBA bytes stored as floats, alpha 255 down to 40.</summary>
    static byte[] UpscalerPicture()
    {
        float[] v = Goldens.ReadNpyF32(Path.Combine(UpscalerDir(), "image.npy"));
        Equal(24 * 20 * 4, v.Length, "image.npy size");
        return v.Select(x => (byte)x).ToArray();
    }

    static KilnUpscaleOptions UpscaleOptions(uint tile, uint context, KilnSeamless seamless)
    {
        KilnUpscaleOptions o = KilnDefaults.UpscaleOptions();
        o.tile = tile;
        o.context = context;
        o.seamless = (uint)seamless;
        return o;
    }

    /// <summary>
    /// How far RGBA8 pixels are from a golden's float RGB planes (3×H×W, tests/upscaler.rs's
    /// layout) beyond 8-bit rounding: max |byte/255 − golden| − 0.5/255, at least 0.
    /// </summary>
    static double PastRoundingPlanar(byte[] rgba, float[] planes)
    {
        int n = rgba.Length / 4;
        Equal(3 * n, planes.Length, "golden plane size");
        double worst = 0;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++)
                worst = Math.Max(worst, Math.Abs(rgba[i * 4 + c] / 255.0 - planes[c * n + i]));
        return Math.Max(worst - 0.5 / 255, 0);
    }

    /// <summary>
    /// The raw C call, wrapper-free: options from kiln_upscale_options_init in a scratch buffer,
    /// fields written at the header's offsets (tile 4, context 8, seamless 12, alpha 16), then
    /// kiln_upscaler_upscale; the result's pixels read through kiln_image_copy.
    /// </summary>
    static byte[] RawUpscale(KilnUpscaler u, KilnImage image, uint tile, uint context, KilnSeamless seamless, KilnUpscaleAlpha alpha)
    {
        IntPtr buf = Marshal.AllocHGlobal(4096);
        KilnUpscaleOptions o;
        try
        {
            KilnNative.kiln_upscale_options_init(buf);
            Equal(20, Marshal.ReadInt32(buf, 0), "kiln_upscale_options_init struct_size");
            Marshal.WriteInt32(buf, 4, (int)tile);
            Marshal.WriteInt32(buf, 8, (int)context);
            Marshal.WriteInt32(buf, 12, (int)seamless);
            Marshal.WriteInt32(buf, 16, (int)alpha);
            o = (KilnUpscaleOptions)Marshal.PtrToStructure(buf, typeof(KilnUpscaleOptions));
        }
        finally { Marshal.FreeHGlobal(buf); }
        IntPtr raw;
        uint status = KilnNative.kiln_upscaler_upscale(u.Handle, image.Handle, ref o, out raw);
        Equal(0u, status, "kiln_upscaler_upscale status (" + KilnStatusNames.LastErrorMessage() + ")");
        Check(raw != IntPtr.Zero, "kiln_upscaler_upscale gave no image");
        // Own the raw image as the wrapper would (its constructor is internal to Kiln.dll).
        var ctor = typeof(KilnImage).GetConstructor(BindingFlags.Instance | BindingFlags.NonPublic, null, new[] { typeof(IntPtr) }, null);
        using (var owned = (KilnImage)ctor.Invoke(new object[] { raw }))
        {
            uint w = KilnNative.kiln_image_width(owned.Handle), h = KilnNative.kiln_image_height(owned.Handle);
            var px = new byte[w * h * 4];
            Equal(0u, KilnNative.kiln_image_copy(owned.Handle, px, new UIntPtr((uint)px.Length), UIntPtr.Zero), "kiln_image_copy");
            return px;
        }
    }

    static void UpscalerMatchesTheGoldensAndTheCApi()
    {
        // tests/fixtures/upscaler/x4 (4x, dynamic shapes, scale found by a probe run): tiles of 8
        // with 20 pixels of context (the net's receptive field is 19) give tests/upscaler.rs's
        // whole-image golden, seamless XY its wrapped golden; every request gives the raw C
        // call's bytes for the same options; alpha through the graph vs bilinear changes only
        // alpha; the defaults are the header's.
        KilnUpscaleOptions d = KilnDefaults.UpscaleOptions();
        Equal((uint)Marshal.SizeOf(typeof(KilnUpscaleOptions)), d.struct_size, "default struct_size");
        Check(d.tile == 256 && d.context == 16 && d.seamless == (uint)KilnSeamless.None && d.alpha == (uint)KilnUpscaleAlpha.Graph,
            "defaults: tile " + d.tile + ", context " + d.context + ", seamless " + d.seamless + ", alpha " + d.alpha);
        using (KilnUpscaler u = KilnUpscaler.Load(runtime, Path.Combine(UpscalerDir(), "x4")))
        using (KilnImage picture = KilnImage.Create(24, 20, UpscalerPicture()))
        {
            Equal(4, u.Scale, "x4 Scale");
            byte[] plain, wrapped;
            using (KilnImage up = u.Upscale(picture, UpscaleOptions(8, 20, KilnSeamless.None)))
            {
                Equal(96, up.Width, "upscaled width");
                Equal(80, up.Height, "upscaled height");
                plain = up.ToArray();
            }
            float[] whole = Goldens.ReadNpyF32(Path.Combine(UpscalerDir(), "golden", "x4_whole.npy"));
            double dp = PastRoundingPlanar(plain, whole);
            Console.WriteLine("    x4 tiles 8 context 20: " + dp.ToString("e3") + " from the whole-image golden past 8-bit rounding (bound " + UpscalerBound + ")");
            Margin("csharp::upscaler::x4_tiles_8_context_20::rgb_abs_past_8bit", dp, UpscalerBound);
            SamePixels(RawUpscale(u, picture, 8, 20, KilnSeamless.None, KilnUpscaleAlpha.Graph), plain, "Upscale vs raw kiln_upscaler_upscale (tile 8, context 20)");

            using (KilnImage up = u.Upscale(picture, UpscaleOptions(8, 20, KilnSeamless.XY))) wrapped = up.ToArray();
            float[] wrapXy = Goldens.ReadNpyF32(Path.Combine(UpscalerDir(), "golden", "x4_wrap_xy.npy"));
            double dw = PastRoundingPlanar(wrapped, wrapXy), control = PastRoundingPlanar(plain, wrapXy);
            Console.WriteLine("    x4 seamless XY: " + dw.ToString("e3") + " from the wrapped golden past 8-bit rounding (bound " + UpscalerBound + "); the plain upscale " + control.ToString("e3"));
            Margin("csharp::upscaler::x4_wrap_xy_tiles_8::rgb_abs_past_8bit", dw, UpscalerBound);
            Check(control > UpscalerBound, "seamless barely matters here (" + control + "): this test would not catch it dropped");
            SamePixels(RawUpscale(u, picture, 8, 20, KilnSeamless.XY, KilnUpscaleAlpha.Graph), wrapped, "Upscale vs raw kiln_upscaler_upscale (seamless XY)");
            using (KilnImage a = KilnImage.Create(96, 80, wrapped))
            using (KilnImage b = KilnImage.Create(96, 80, plain))
            {
                float sa = a.SeamScore(KilnSeamless.X), sb = b.SeamScore(KilnSeamless.X);
                Console.WriteLine("    seam score X: " + sa + " seamless vs " + sb + " plain");
                Check(sa < sb, "the seamless upscale does not tile better: " + sa + " vs " + sb);
            }

            // Defaults (null options) and the raw call with init's values; bilinear alpha.
            using (KilnImage up = u.Upscale(picture))
                SamePixels(RawUpscale(u, picture, d.tile, d.context, KilnSeamless.None, KilnUpscaleAlpha.Graph), up.ToArray(), "Upscale(defaults) vs raw kiln_upscaler_upscale");
            var bilinearOptions = UpscaleOptions(8, 20, KilnSeamless.None);
            bilinearOptions.alpha = (uint)KilnUpscaleAlpha.Bilinear;
            byte[] bilinear;
            using (KilnImage up = u.Upscale(picture, bilinearOptions)) bilinear = up.ToArray();
            SamePixels(RawUpscale(u, picture, 8, 20, KilnSeamless.None, KilnUpscaleAlpha.Bilinear), bilinear, "Upscale vs raw kiln_upscaler_upscale (bilinear alpha)");
            int rgbDiffer = 0, alphaDiffer = 0;
            for (int i = 0; i < plain.Length; i++) if (plain[i] != bilinear[i]) { if (i % 4 == 3) alphaDiffer++; else rgbDiffer++; }
            Console.WriteLine("    bilinear vs graph alpha: " + alphaDiffer + " alpha bytes differ (need > 0), " + rgbDiffer + " RGB bytes (bound: 0)");
            Check(alphaDiffer > 0 && rgbDiffer == 0, "alpha modes");
            // The input image is left as it was.
            SamePixels(UpscalerPicture(), picture.ToArray(), "input image after the upscales");
        }
    }

    static void UpscalerErrors()
    {
        // Bad paths and graphs throw their statuses with messages; bad options throw
        // INVALID_ARGUMENT and leave the upscaler usable; a fixed-size graph file with its
        // settings beside it loads; an upscaler outlives its runtime; a disposed one never
        // reaches Kiln.
        string missing = Path.Combine(UpscalerDir(), "no-such-upscaler");
        KilnException e = Throws(() => KilnUpscaler.Load(runtime, missing), KilnStatus.ModelNotFound, "missing upscaler");
        Check(e.NativeMessage.Contains("no-such-upscaler"), "message names the path: " + e.NativeMessage);
        KilnUpscaler none;
        KilnError err = KilnUpscaler.TryLoad(runtime, Path.Combine(UpscalerDir(), "no-such.onnx"), out none);
        Equal(KilnStatus.ModelNotFound, err.Status, "TryLoad status");
        Check(none == null && err.Message.Contains("no-such.onnx"), "TryLoad: " + err);
        Throws(() => KilnUpscaler.Load(runtime, Path.Combine(FixturesDir(), "matting", "fixed", "model.onnx")), KilnStatus.ModelInvalid, "matting graph as an upscaler");
        Throws(() => KilnUpscaler.Load(runtime, null), KilnStatus.NullArgument, "null path");
        try { KilnUpscaler.Load(runtime, "a\0b"); throw new Exception("an embedded NUL was accepted"); }
        catch (ArgumentException) { }

        byte[] small = UpscalerPicture();
        using (var rt = new KilnRuntime())
        using (KilnUpscaler x2 = KilnUpscaler.Load(rt, Path.Combine(UpscalerDir(), "x2-fixed.onnx")))
        using (KilnImage picture = KilnImage.Create(24, 20, small))
        {
            rt.Dispose();
            Equal(2, x2.Scale, "x2-fixed Scale (its .json says 2)");
            byte[] before;
            using (KilnImage up = x2.Upscale(picture)) { Equal(48, up.Width, "x2 width after the runtime's Dispose"); before = up.ToArray(); }
            var bad = KilnDefaults.UpscaleOptions();
            bad.alpha = 7;
            e = Throws(() => x2.Upscale(picture, bad).Dispose(), KilnStatus.InvalidArgument, "alpha 7");
            Check(e.NativeMessage.Contains("alpha"), "message names alpha: " + e.NativeMessage);
            bad = KilnDefaults.UpscaleOptions();
            bad.seamless = 9;
            Throws(() => x2.Upscale(picture, bad).Dispose(), KilnStatus.InvalidArgument, "seamless 9");
            bad = KilnDefaults.UpscaleOptions();
            bad.context = 2000;
            Throws(() => x2.Upscale(picture, bad).Dispose(), KilnStatus.InvalidArgument, "context 2000");
            using (KilnImage wide = KilnImage.Create(8200, 1, new byte[8200 * 4]))
                Throws(() => x2.Upscale(wide).Dispose(), KilnStatus.InvalidSize, "a result over 16384 pixels a side");
            using (KilnImage up = x2.Upscale(picture)) SamePixels(before, up.ToArray(), "x2 upscale after the errors");
            KilnImage gone = KilnImage.Create(2, 2, new byte[16]);
            gone.Dispose();
            try { x2.Upscale(gone).Dispose(); throw new Exception("upscaled a disposed image"); }
            catch (ObjectDisposedException) { }
            // The refused image must not keep the upscaler alive (Mono's marshaller keeps a
            // reference to a first handle when it fails on the second).
            x2.Dispose();
            Check(x2.Handle.IsClosed, "the upscaler's handle is still open after Dispose");
            try { var s = x2.Scale; throw new Exception("used a disposed upscaler: " + s); }
            catch (ObjectDisposedException) { }
            try { x2.Cancel(); throw new Exception("cancelled a disposed upscaler"); }
            catch (ObjectDisposedException) { }
        }
    }

    static void UpscalerCancelFromAnotherThread()
    {
        // tests/upscaler.rs's cancel case through the binding: a 256x256 upscale in 8-pixel tiles
        // on a worker thread, Cancel from this one until it returns: CANCELLED, with the
        // upscaler's earlier pixels for a later call. Cancel with nothing in flight is a no-op.
        using (KilnUpscaler u = KilnUpscaler.Load(runtime, Path.Combine(UpscalerDir(), "x4")))
        using (KilnImage picture = KilnImage.Create(24, 20, UpscalerPicture()))
        using (KilnImage big = KilnImage.Create(256, 256, Enumerable.Range(0, 256 * 256 * 4).Select(i => (byte)(i % 251)).ToArray()))
        {
            byte[] before;
            using (KilnImage up = u.Upscale(picture, UpscaleOptions(0, 0, KilnSeamless.None))) before = up.ToArray();
            u.Cancel();
            KilnStatus status = KilnStatus.Ok;
            Exception other = null;
            int workerThread = 0;
            var worker = new Thread(() =>
            {
                workerThread = Thread.CurrentThread.ManagedThreadId;
                try { u.Upscale(big, UpscaleOptions(8, 20, KilnSeamless.None)).Dispose(); }
                catch (KilnException ex) { status = ex.Status; Console.WriteLine("    worker -> " + ex.Message); }
                catch (Exception ex) { other = ex; }
            });
            var clock = System.Diagnostics.Stopwatch.StartNew();
            worker.Start();
            int cancels = 0;
            // Cancel reaches only calls already in flight: keep cancelling until the worker returns.
            while (!worker.Join(5))
            {
                u.Cancel();
                cancels++;
                if (clock.Elapsed > TimeSpan.FromSeconds(120)) throw new Exception("the cancelled upscale did not return within 120 s");
            }
            Console.WriteLine("    returned after " + clock.ElapsedMilliseconds + " ms and " + cancels + " Cancel calls from thread " + Thread.CurrentThread.ManagedThreadId + " (worker " + workerThread + ")");
            Check(other == null, "worker threw " + other);
            Check(cancels > 0, "the upscale ended before it could be cancelled");
            Equal(KilnStatus.Cancelled, status, "status of the cancelled upscale");
            using (KilnImage up = u.Upscale(picture, UpscaleOptions(0, 0, KilnSeamless.None)))
                SamePixels(before, up.ToArray(), "upscale after the cancel vs before");
        }
    }

    static KilnUpscaleOptions UpscaleOptions(uint tile, uint context, KilnSeamless seamless, KilnUpscaleAlpha alpha)
    {
        KilnUpscaleOptions o = UpscaleOptions(tile, context, seamless);
        o.alpha = (uint)alpha;
        return o;
    }

    /// <summary>Runs an upscale job to its end and returns its status, checking it succeeded.</summary>
    static KilnJobStatus Succeeds(KilnJob job, string what)
    {
        KilnJobStatus s = PollUntilEnded(job);
        Equal(KilnJobState.Succeeded, s.State, what + " state (" + job.ErrorMessage + ")");
        return s;
    }

    static void UpscaleJobs()
    {
        // KilnUpscaler.Submit on the x4 fixture: each job gives the blocking Upscale's bytes;
        // progress counts graph runs (24x20 in 8-pixel tiles: 3x3, twice with alpha through the
        // graph), known from submission on, one progress event each and no previews; bad
        // arguments throw at submit and queue nothing; the upscaler and the image may be disposed
        // right after submit; a disposed image throws and does not keep the upscaler open.
        byte[] sprite = UpscalerPicture();
        byte[] opaque = (byte[])sprite.Clone();
        for (int i = 3; i < opaque.Length; i += 4) opaque[i] = 255;
        using (KilnUpscaler u = KilnUpscaler.Load(runtime, Path.Combine(UpscalerDir(), "x4")))
        using (KilnImage withAlpha = KilnImage.Create(24, 20, sprite))
        using (KilnImage solid = KilnImage.Create(24, 20, opaque))
        {
            var cases = new[]
            {
                new { Name = "opaque, tile 8", Image = solid, Options = UpscaleOptions(8, 20, KilnSeamless.None), Runs = 9u },
                new { Name = "transparent, alpha GRAPH", Image = withAlpha, Options = UpscaleOptions(8, 20, KilnSeamless.None, KilnUpscaleAlpha.Graph), Runs = 18u },
                new { Name = "transparent, alpha BILINEAR", Image = withAlpha, Options = UpscaleOptions(8, 20, KilnSeamless.None, KilnUpscaleAlpha.Bilinear), Runs = 9u },
                new { Name = "transparent, seamless XY", Image = withAlpha, Options = UpscaleOptions(8, 20, KilnSeamless.XY), Runs = 18u },
            };
            foreach (var c in cases)
            {
                byte[] blocking;
                using (KilnImage up = u.Upscale(c.Image, c.Options)) blocking = up.ToArray();
                var events = new List<KilnJobEventArgs>();
                var finished = new ManualResetEvent(false);
                var js = new KilnJobSettings
                {
                    PreviewInterval = 1,
                    OnEvent = ev => { lock (events) events.Add(ev); if (ev.Kind == KilnJobEventKind.Finished) finished.Set(); },
                };
                using (KilnJob job = u.Submit(c.Image, c.Options, js))
                {
                    KilnJobStatus first = job.Poll();
                    Equal(c.Runs, first.TotalSteps, c.Name + ": total steps at submission");
                    KilnJobStatus s = Succeeds(job, c.Name);
                    Console.WriteLine("    " + c.Name + ": step " + s.Step + " of " + s.TotalSteps + " graph runs (expected " + c.Runs + ")");
                    Equal(c.Runs, s.TotalSteps, c.Name + ": total steps");
                    Equal(c.Runs, s.Step, c.Name + ": steps done");
                    Equal(0u, s.PreviewStep, c.Name + ": no preview");
                    int w, h;
                    job.ImageSize(out w, out h);
                    Check(w == 96 && h == 80, c.Name + ": job image " + w + "x" + h);
                    SamePixels(blocking, job.CopyImage(), "Submit vs Upscale (" + c.Name + ")");
                    uint step;
                    Equal(KilnStatus.Busy, job.TryCopyPreview(new byte[16], out step).Status, c.Name + ": copy preview");
                    Check(finished.WaitOne(60000), c.Name + ": Finished event");
                    lock (events)
                    {
                        var progress = events.Where(e => e.Kind == KilnJobEventKind.Progress).ToList();
                        Equal((int)c.Runs, progress.Count, c.Name + ": progress events");
                        for (int i = 0; i < progress.Count; i++)
                        {
                            Equal((uint)(i + 1), progress[i].Step, c.Name + ": progress step order");
                            Equal(c.Runs, progress[i].TotalSteps, c.Name + ": progress total");
                        }
                        Check(!events.Any(e => e.Kind == KilnJobEventKind.Preview), c.Name + ": a preview event");
                        Equal(KilnJobEventKind.Finished, events.Last().Kind, c.Name + ": last event");
                        Equal(KilnJobState.Succeeded, events.Last().State, c.Name + ": Finished state");
                    }
                }
            }
            // Defaults (null options, null job settings).
            byte[] defaults;
            using (KilnImage up = u.Upscale(withAlpha)) defaults = up.ToArray();
            using (KilnJob job = u.Submit(withAlpha))
            {
                Succeeds(job, "defaults");
                SamePixels(defaults, job.CopyImage(), "Submit(defaults) vs Upscale(defaults)");
            }

            // Checked at submit: each bad argument throws its status and leaves no job.
            int refused = 0;
            var counting = new KilnJobSettings { OnEvent = ev => Interlocked.Increment(ref refused) };
            object[] before = LiveJobStates();
            var bad = UpscaleOptions(8, 20, KilnSeamless.None);
            bad.alpha = 7;
            KilnException ex = Throws(() => u.Submit(withAlpha, bad, counting).Dispose(), KilnStatus.InvalidArgument, "Submit alpha 7");
            Check(ex.NativeMessage.Contains("alpha"), "message names alpha: " + ex.NativeMessage);
            bad = UpscaleOptions(8, 20, KilnSeamless.None);
            bad.seamless = 9;
            Throws(() => u.Submit(withAlpha, bad, counting).Dispose(), KilnStatus.InvalidArgument, "Submit seamless 9");
            bad = UpscaleOptions(8, 2000, KilnSeamless.None);
            Throws(() => u.Submit(withAlpha, bad, counting).Dispose(), KilnStatus.InvalidArgument, "Submit context 2000");
            using (KilnImage huge = KilnImage.Create(4097, 1, Enumerable.Repeat((byte)255, 4097 * 4).ToArray()))
            {
                ex = Throws(() => u.Submit(huge, null, counting).Dispose(), KilnStatus.InvalidSize, "Submit with a result over 16384 pixels a side");
                Check(ex.NativeMessage.Contains("16384"), "message names 16384: " + ex.NativeMessage);
            }
            try { u.Submit(null).Dispose(); throw new Exception("a null image was accepted"); }
            catch (ArgumentNullException) { }
            Thread.Sleep(20);
            NoNewJob(before, Volatile.Read(ref refused), "upscale submits");
            using (KilnJob job = u.Submit(solid, UpscaleOptions(8, 20, KilnSeamless.None)))
            {
                Succeeds(job, "after the refused submits");
                using (KilnImage up = u.Upscale(solid, UpscaleOptions(8, 20, KilnSeamless.None)))
                    SamePixels(up.ToArray(), job.CopyImage(), "job after the refused submits vs Upscale");
            }

            // The upscaler and the image disposed right after submit: the job copied one and holds
            // the other.
            byte[] expected;
            using (KilnImage up = u.Upscale(withAlpha, UpscaleOptions(8, 20, KilnSeamless.XY))) expected = up.ToArray();
            KilnUpscaler own = KilnUpscaler.Load(runtime, Path.Combine(UpscalerDir(), "x4"));
            KilnImage picture = KilnImage.Create(24, 20, sprite);
            using (KilnJob job = own.Submit(picture, UpscaleOptions(8, 20, KilnSeamless.XY)))
            {
                own.Dispose();
                picture.Dispose();
                Check(own.Handle.IsClosed && picture.Handle.IsClosed, "the upscaler's or the image's handle is still open after Dispose");
                Succeeds(job, "job after its upscaler's and image's Dispose");
                SamePixels(expected, job.CopyImage(), "job of a disposed upscaler and image vs Upscale");
            }
            before = LiveJobStates();
            try { own.Submit(withAlpha).Dispose(); throw new Exception("submitted on a disposed upscaler"); }
            catch (ObjectDisposedException) { }
            NoNewJob(before, 0, "submit on a disposed upscaler");
        }

        // A disposed image is refused before the call and does not keep the upscaler open (Mono's
        // marshaller keeps its reference to a first handle when it fails on the second).
        KilnUpscaler x4 = KilnUpscaler.Load(runtime, Path.Combine(UpscalerDir(), "x4"));
        KilnImage gone = KilnImage.Create(2, 2, new byte[16]);
        gone.Dispose();
        object[] live = LiveJobStates();
        try { x4.Submit(gone).Dispose(); throw new Exception("submitted a disposed image"); }
        catch (ObjectDisposedException) { }
        NoNewJob(live, 0, "submit of a disposed image");
        x4.Dispose();
        Check(x4.Handle.IsClosed, "the upscaler's handle is still open after Dispose");
    }

    static void UpscaleJobCancel()
    {
        // A 256x256 upscale job in 8-pixel tiles with 20 of context (32x32 graph runs), cancelled
        // while it runs, first through its job, then through KilnUpscaler.Cancel: each ends
        // Cancelled before its last run. A job queued behind the second (the suite's runtimes
        // leave Kiln's process-wide pool at one worker) is untouched, and gives Upscale's bytes.
        using (KilnUpscaler u = KilnUpscaler.Load(runtime, Path.Combine(UpscalerDir(), "x4")))
        using (KilnImage picture = KilnImage.Create(24, 20, UpscalerPicture()))
        using (KilnImage big = KilnImage.Create(256, 256, Enumerable.Range(0, 256 * 256 * 4).Select(i => i % 4 == 3 ? (byte)255 : (byte)(i % 251)).ToArray()))
        {
            var o = UpscaleOptions(8, 20, KilnSeamless.None);
            byte[] small;
            using (KilnImage up = u.Upscale(picture, o)) small = up.ToArray();
            foreach (bool byUpscaler in new[] { false, true })
            {
                string how = byUpscaler ? "KilnUpscaler.Cancel" : "KilnJob.Cancel";
                var finished = new ManualResetEvent(false);
                KilnJobState endState = KilnJobState.Queued;
                var js = new KilnJobSettings { OnEvent = ev => { if (ev.Kind == KilnJobEventKind.Finished) { endState = ev.State; finished.Set(); } } };
                using (KilnJob job = u.Submit(big, o, js))
                using (KilnJob after = u.Submit(picture, o))
                {
                    KilnJobStatus running = PollUntilRunning(job);
                    Equal(KilnJobState.Running, running.State, how + ": state before the cancel");
                    Equal(32u * 32u, running.TotalSteps, how + ": graph runs of 256x256 in 8-pixel tiles");
                    if (byUpscaler) u.Cancel(); else job.Cancel();
                    var clock = System.Diagnostics.Stopwatch.StartNew();
                    KilnJobStatus s = PollUntilEnded(job);
                    Console.WriteLine("    " + how + ": ended " + s.State + " at run " + s.Step + " of " + s.TotalSteps + " after " + clock.ElapsedMilliseconds + " ms: " + job.ErrorMessage);
                    Equal(KilnJobState.Cancelled, s.State, how + ": state after the cancel");
                    Check(s.Step < s.TotalSteps, how + ": the job ran to its end");
                    Check(job.ErrorMessage.Length > 0, how + ": a cancelled job has a message");
                    Equal(KilnStatus.InvalidArgument, job.TryCopyImage(new byte[1024 * 1024 * 4]).Status, how + ": copy image of a cancelled job");
                    Check(finished.WaitOne(60000), how + ": Finished event");
                    Equal(KilnJobState.Cancelled, endState, how + ": Finished event state");
                    Succeeds(after, how + ": the job queued behind");
                    SamePixels(small, after.CopyImage(), how + ": the job queued behind vs Upscale");
                }
            }
        }
    }

    static void UpscaledJobs()
    {
        // KilnModel.SubmitUpscaled on a seamless view of the tiny model with the x4 fixture: the
        // job's bytes are the view's generation upscaled by the blocking Upscale wrapping on x and
        // y (the options' own seamless, None here, is ignored); one count over the 4 DDIM U-Net
        // calls then the 2x2 tiles of 32 pixels, known from submission on; previews from the
        // generation; the view and the upscaler may be disposed right after submit. Bad sizes and
        // options throw at submit and queue nothing; a disposed upscaler throws and does not keep
        // the model open.
        var settings = Quick("mossy cobblestone", 5);
        settings.Scheduler = KilnScheduler.Ddim;
        const uint total = 4 + 2 * 2;
        byte[] expected, plainUpscale;
        using (KilnModel view = model.Seamless(KilnSeamless.XY))
        using (KilnUpscaler u = KilnUpscaler.Load(runtime, Path.Combine(UpscalerDir(), "x4")))
        using (KilnImage generated = view.Generate(settings))
        {
            using (KilnImage up = u.Upscale(generated, UpscaleOptions(32, 16, KilnSeamless.XY))) expected = up.ToArray();
            using (KilnImage up = u.Upscale(generated, UpscaleOptions(32, 16, KilnSeamless.None))) plainUpscale = up.ToArray();
        }
        int control = expected.Where((b, i) => b != plainUpscale[i]).Count();
        Console.WriteLine("    the plain upscale differs from the wrapped one in " + control + " bytes");
        Check(control > 0, "wrapping does not matter here: this test would not catch the model's axes dropped");

        var events = new List<KilnJobEventArgs>();
        var finished = new ManualResetEvent(false);
        var js = new KilnJobSettings
        {
            PreviewInterval = 2,
            OnEvent = ev => { lock (events) events.Add(ev); if (ev.Kind == KilnJobEventKind.Finished) finished.Set(); },
        };
        KilnModel own = model.Seamless(KilnSeamless.XY);
        KilnUpscaler x4 = KilnUpscaler.Load(runtime, Path.Combine(UpscalerDir(), "x4"));
        using (KilnJob job = own.SubmitUpscaled(settings, x4, UpscaleOptions(32, 16, KilnSeamless.None), js))
        {
            Equal(total, job.Poll().TotalSteps, "total steps right after submit (4 U-Net calls + 2x2 tiles)");
            own.Dispose();
            x4.Dispose();
            Check(own.Handle.IsClosed && x4.Handle.IsClosed, "the view's or the upscaler's handle is still open after Dispose");
            KilnJobStatus s = Succeeds(job, "upscaled job");
            Console.WriteLine("    upscaled job: step " + s.Step + " of " + s.TotalSteps + ", preview at " + s.PreviewStep + " " + s.PreviewWidth + "x" + s.PreviewHeight);
            Equal(total, s.Step, "steps done");
            Equal(total, s.TotalSteps, "total steps");
            Equal(4u, s.PreviewStep, "preview from the generation's last step");
            Check(s.PreviewWidth == 8 && s.PreviewHeight == 8, "preview of the 8x8 latents");
            int w, h;
            job.ImageSize(out w, out h);
            Check(w == 256 && h == 256, "upscaled job image " + w + "x" + h);
            SamePixels(expected, job.CopyImage(), "SubmitUpscaled vs Generate on the view + Upscale seamless XY");
            Check(finished.WaitOne(60000), "Finished event");
            lock (events)
            {
                var progress = events.Where(e => e.Kind == KilnJobEventKind.Progress).ToList();
                Equal((int)total, progress.Count, "progress events");
                for (int i = 0; i < progress.Count; i++)
                {
                    Equal((uint)(i + 1), progress[i].Step, "progress step order");
                    Equal(total, progress[i].TotalSteps, "progress total");
                }
                Check(events.Any(e => e.Kind == KilnJobEventKind.Preview), "no preview event");
                Check(events.Where(e => e.Kind == KilnJobEventKind.Preview).All(e => e.Step <= 4), "a preview after the generation");
                Equal(KilnJobEventKind.Finished, events.Last().Kind, "last event");
                Equal(KilnJobState.Succeeded, events.Last().State, "Finished state");
            }
        }

        // Checked at submit: each bad argument throws its status and leaves no job.
        using (KilnModel view = model.Seamless(KilnSeamless.XY))
        using (KilnUpscaler u = KilnUpscaler.Load(runtime, Path.Combine(UpscalerDir(), "x4")))
        {
            int refused = 0;
            var counting = new KilnJobSettings { OnEvent = ev => Interlocked.Increment(ref refused) };
            object[] before = LiveJobStates();
            var bad = Quick("mossy cobblestone", 5);
            bad.Width = 72;
            Throws(() => view.SubmitUpscaled(bad, u, UpscaleOptions(32, 16, KilnSeamless.None), counting).Dispose(), KilnStatus.InvalidSize, "SubmitUpscaled width 72");
            bad.Width = 8192;
            KilnException ex = Throws(() => view.SubmitUpscaled(bad, u, null, counting).Dispose(), KilnStatus.InvalidSize, "SubmitUpscaled with a result over 16384 pixels a side");
            Check(ex.NativeMessage.Contains("16384"), "message names 16384: " + ex.NativeMessage);
            Throws(() => view.SubmitUpscaled(settings, u, UpscaleOptions(32, 2000, KilnSeamless.None), counting).Dispose(), KilnStatus.InvalidArgument, "SubmitUpscaled context 2000");
            try { view.SubmitUpscaled(settings, null).Dispose(); throw new Exception("a null upscaler was accepted"); }
            catch (ArgumentNullException) { }
            try { view.SubmitUpscaled(null, u).Dispose(); throw new Exception("null settings accepted"); }
            catch (ArgumentNullException) { }
            Thread.Sleep(20);
            NoNewJob(before, Volatile.Read(ref refused), "upscaled submits");
        }

        // A disposed upscaler is refused before the call and does not keep the model open (Mono's
        // marshaller keeps its reference to a first handle when it fails on the second); a
        // disposed model throws too.
        KilnModel second = KilnModel.Load(runtime, modelDir);
        KilnUpscaler gone = KilnUpscaler.Load(runtime, Path.Combine(UpscalerDir(), "x4"));
        gone.Dispose();
        object[] live = LiveJobStates();
        try { second.SubmitUpscaled(settings, gone).Dispose(); throw new Exception("submitted with a disposed upscaler"); }
        catch (ObjectDisposedException) { }
        second.Dispose();
        Check(second.Handle.IsClosed, "the model's handle is still open after Dispose");
        using (KilnUpscaler u = KilnUpscaler.Load(runtime, Path.Combine(UpscalerDir(), "x4")))
        {
            try { second.SubmitUpscaled(settings, u).Dispose(); throw new Exception("submitted on a disposed model"); }
            catch (ObjectDisposedException) { }
            u.Dispose();
            Check(u.Handle.IsClosed, "the upscaler's handle is still open after Dispose");
        }
        NoNewJob(live, 0, "upscaled submits with a disposed upscaler or model");
    }

    static object Field(object o, string name)
    {
        return o.GetType().GetField(name, BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public).GetValue(o);
    }

    static void WaitFor(Func<bool> condition, string what)
    {
        // The job's own lease goes back on whichever thread saw it finish last.
        DateTime giveUp = DateTime.UtcNow.AddSeconds(60);
        while (!condition())
        {
            if (DateTime.UtcNow > giveUp) throw new Exception("never true: " + what);
            Thread.Sleep(2);
        }
    }

    static void ModelJobs()
    {
        // SubmitLoad and SubmitWithLoras: the job's model is the blocking call's (same bytes);
        // TakeModel hands out a model of its own per call that outlives the job; submit-time
        // errors queue nothing; a missing LoRA fails the job; an image job has no model.
        var settings = Quick("mossy stone brick wall", 11);
        byte[] basePixels;
        using (KilnImage image = model.Generate(settings)) basePixels = image.ToArray();
        var counts = new EventCounts();
        var js = counts.Settings();
        KilnModel loaded, second;
        ulong loadId;
        using (KilnJob job = KilnModel.SubmitLoad(runtime, modelDir, js))
        {
            loadId = job.Id;
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "load job state (" + job.ErrorMessage + ")");
            Console.WriteLine("    load job: step " + s.Step + " of " + s.TotalSteps + ", preview step " + s.PreviewStep);
            Check(s.Step == s.TotalSteps && s.TotalSteps > 1 && s.PreviewStep == 0, "load job progress: all of its graphs' KiB, no preview");
            loaded = job.TakeModel();
            second = job.TakeModel();
            Check(loaded.Handle.DangerousGetHandle() != second.Handle.DangerousGetHandle(), "TakeModel gives a handle of its own per call");
            int w, h;
            Throws(() => job.ImageSize(out w, out h), KilnStatus.InvalidArgument, "ImageSize of a model job");
            Throws(() => job.CopyImage(), KilnStatus.InvalidArgument, "CopyImage of a model job");
        }
        WaitUntilFreed(loadId);
        second.Dispose();
        Check(counts.Finished == 1 && counts.Previews == 0, "load job events: " + counts.Previews + " previews, " + counts.Finished + " Finished");
        try
        {
            Equal(64u, loaded.Info.default_size, "the job's model info");
            using (KilnImage image = loaded.Generate(settings)) SamePixels(basePixels, image.ToArray(), "SubmitLoad job's model vs KilnModel.Load's");

            // A LoRA switch as a job gives WithLoras' model; the base model stays as it was.
            string detail = Path.Combine(FixturesDir(), "lora", "detail.kohya.safetensors");
            byte[] blocking;
            using (KilnModel styled = loaded.WithLoras(new KilnLoraSpec(detail, 0.8f)))
            using (KilnImage image = styled.Generate(settings))
                blocking = image.ToArray();
            using (KilnJob job = loaded.SubmitWithLoras(new[] { new KilnLoraSpec(detail, 0.8f) }))
            {
                KilnJobStatus s = PollUntilEnded(job);
                Equal(KilnJobState.Succeeded, s.State, "LoRA job state (" + job.ErrorMessage + ")");
                Check(s.Step == s.TotalSteps && s.TotalSteps > 1, "LoRA job progress " + s.Step + " of " + s.TotalSteps + " (KiB of the U-Net and text encoder it remakes)");
                using (KilnModel styled = job.TakeModel())
                {
                    KilnLoraSpec[] listed = styled.Loras;
                    Check(listed.Length == 1 && listed[0].Path.EndsWith("detail.kohya.safetensors") && listed[0].Scale == 0.8f, "the job's model lists its LoRA");
                    using (KilnImage image = styled.Generate(settings)) SamePixels(blocking, image.ToArray(), "SubmitWithLoras job's model vs WithLoras'");
                }
            }
            int differing = basePixels.Zip(blocking, (x, y) => x != y).Count(d => d);
            Console.WriteLine("    detail LoRA at 0.8: " + differing + " bytes differ from the base model's image (need > 0)");
            Check(differing > 0, "the LoRA did not change the image");
            Equal(0, loaded.Loras.Length, "base model's Loras after the LoRA job");

            // Files are read by the job: a missing LoRA fails it, and it has no model.
            string gone = Path.Combine(scratch, "no-such-lora.safetensors");
            using (KilnJob job = loaded.SubmitWithAdapters(new[] { new KilnLoraSpec(gone, 0.8f) }, null))
            {
                Equal(KilnJobState.Failed, PollUntilEnded(job).State, "missing-LoRA job state");
                Check(job.ErrorMessage.Contains("no-such-lora.safetensors"), "job message names the file: " + job.ErrorMessage);
                Console.WriteLine("    missing-LoRA job -> " + job.ErrorMessage);
                KilnModel none;
                Equal(KilnStatus.InvalidArgument, job.TryTakeModel(out none).Status, "TryTakeModel of a failed job");
                Check(none == null, "TryTakeModel of a failed job gave a model");
                Throws(() => job.TakeModel(), KilnStatus.InvalidArgument, "TakeModel of a failed job");
            }

            // Checked at submit: nothing queued, no event.
            int refused = 0;
            var counting = new KilnJobSettings { OnEvent = ev => Interlocked.Increment(ref refused) };
            object[] before = LiveJobStates();
            KilnException e = Throws(() => KilnModel.SubmitLoad(runtime, Path.Combine(scratch, "no-such-model"), counting).Dispose(), KilnStatus.ModelNotFound, "SubmitLoad of a missing folder");
            Check(e.NativeMessage.Contains("no-such-model"), "message names the folder: " + e.NativeMessage);
            Throws(() => KilnModel.SubmitLoad(runtime, modelDir, (KilnSeamless)9, null, counting).Dispose(), KilnStatus.InvalidArgument, "SubmitLoad with an unknown seamless");
            Throws(() => loaded.SubmitWithLoras(new[] { new KilnLoraSpec(detail, float.NaN) }, counting).Dispose(), KilnStatus.InvalidArgument, "SubmitWithLoras with a NaN scale");
            try { KilnModel.SubmitLoad(runtime, "bad\0path", counting).Dispose(); throw new Exception("a NUL in the path accepted"); }
            catch (ArgumentException) { }
            try { KilnModel.SubmitLoad(null, modelDir).Dispose(); throw new Exception("null runtime accepted"); }
            catch (ArgumentNullException) { }
            Thread.Sleep(20);
            NoNewJob(before, Volatile.Read(ref refused), "model-job submits");

            // Queued behind a long generation: BUSY; cancelled it never runs and has no model.
            using (KilnJob longJob = loaded.Submit(new KilnGenerateSettings { Prompt = "long", Steps = 500 }))
            {
                PollUntilRunning(longJob);
                using (KilnJob job = KilnModel.SubmitLoad(runtime, modelDir))
                {
                    Equal(1u, job.Poll().TotalSteps, "load job total steps at submit");
                    KilnModel none;
                    Equal(KilnStatus.Busy, job.TryTakeModel(out none).Status, "TryTakeModel of a queued load");
                    Check(none == null, "TryTakeModel of a queued load gave a model");
                    job.Cancel();
                    longJob.Cancel();
                    KilnJobStatus s = PollUntilEnded(job);
                    Equal(KilnJobState.Cancelled, s.State, "cancelled load job");
                    Equal(0u, s.Step, "a cancelled queued load's step");
                    Throws(() => job.TakeModel(), KilnStatus.InvalidArgument, "TakeModel of a cancelled job");
                }
                PollUntilEnded(longJob);
            }

            // The other way round: an image job has no model.
            using (KilnJob job = loaded.Submit(Quick("an image", 1)))
            {
                Equal(KilnJobState.Succeeded, PollUntilEnded(job).State, "image job state");
                KilnException x = Throws(() => job.TakeModel(), KilnStatus.InvalidArgument, "TakeModel of an image job");
                Check(x.NativeMessage.Contains("image"), "message says the job made an image: " + x.NativeMessage);
                job.Dispose();
                try { job.TakeModel().Dispose(); throw new Exception("TakeModel of a disposed job"); }
                catch (ObjectDisposedException) { }
            }

            // A disposed model or runtime throws before Kiln is called, and queues nothing.
            before = LiveJobStates();
            KilnModel disposed = KilnModel.Load(runtime, modelDir);
            disposed.Dispose();
            try { disposed.SubmitWithLoras(new[] { new KilnLoraSpec(detail, 0.8f) }).Dispose(); throw new Exception("submitted on a disposed model"); }
            catch (ObjectDisposedException) { }
            var rt = new KilnRuntime();
            rt.Dispose();
            try { KilnModel.SubmitLoad(rt, modelDir).Dispose(); throw new Exception("submitted on a disposed runtime"); }
            catch (ObjectDisposedException) { }
            NoNewJob(before, 0, "model-job submits on disposed handles");
        }
        finally
        {
            loaded.Dispose();
        }
    }

    static void SeamlessJob()
    {
        // SubmitSeamless: the job's view generates Seamless()'s bytes (not the plain model's),
        // from a model disposed right after submit; progress in KiB of the graphs it remakes, no previews; axes that
        // are no KilnSeamless are refused at submit and queue nothing.
        var settings = Quick("mossy stone", 5);
        byte[] plain, blocking;
        using (KilnImage image = model.Generate(settings)) plain = image.ToArray();
        using (KilnModel view = model.Seamless(KilnSeamless.XY))
        using (KilnImage image = view.Generate(settings))
            blocking = image.ToArray();
        var counts = new EventCounts();
        var js = counts.Settings();
        KilnJob job;
        using (KilnModel own = KilnModel.Load(runtime, modelDir))
            job = own.SubmitSeamless(KilnSeamless.XY, js);
        ulong id = job.Id;
        using (job)
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "seamless job state (" + job.ErrorMessage + ")");
            Console.WriteLine("    seamless job: step " + s.Step + " of " + s.TotalSteps + ", preview step " + s.PreviewStep);
            Check(s.Step == s.TotalSteps && s.TotalSteps > 1 && s.PreviewStep == 0, "seamless job progress: all of its graphs' KiB, no preview");
            int w, h;
            Throws(() => job.ImageSize(out w, out h), KilnStatus.InvalidArgument, "ImageSize of a seamless job");
            using (KilnModel view = job.TakeModel())
            using (KilnImage image = view.Generate(settings))
            {
                byte[] tiled = image.ToArray();
                SamePixels(blocking, tiled, "SubmitSeamless job's view vs Seamless()'s");
                int differing = plain.Zip(tiled, (x, y) => x != y).Count(d => d);
                Console.WriteLine("    seamless view: " + differing + " bytes differ from the plain model's image (need > 0)");
                Check(differing > 0, "the seamless view did not change the image");
            }
        }
        WaitUntilFreed(id);
        Check(counts.Finished == 1 && counts.Previews == 0, "seamless job events: " + counts.Previews + " previews, " + counts.Finished + " Finished");

        // Checked at submit: nothing queued, no event.
        int refused = 0;
        var counting = new KilnJobSettings { OnEvent = ev => Interlocked.Increment(ref refused) };
        object[] before = LiveJobStates();
        KilnException e = Throws(() => model.SubmitSeamless((KilnSeamless)9, counting).Dispose(), KilnStatus.InvalidArgument, "SubmitSeamless with an unknown axes value");
        Check(e.NativeMessage.Contains("axes"), "message names axes: " + e.NativeMessage);
        KilnModel disposed = KilnModel.Load(runtime, modelDir);
        disposed.Dispose();
        try { disposed.SubmitSeamless(KilnSeamless.XY, counting).Dispose(); throw new Exception("submitted on a disposed model"); }
        catch (ObjectDisposedException) { }
        Thread.Sleep(20);
        NoNewJob(before, Volatile.Read(ref refused), "seamless-job submits");
    }

    static void UpscalerLoadJob()
    {
        // KilnUpscaler.SubmitLoad: the job's upscaler upscales to the blocking Load's bytes, from a
        // runtime disposed right after submit (the job and each upscaler taken from it lease its log
        // sink); progress in KiB of its graph, no previews; TakeUpscaler gives a handle of its own per call;
        // a missing path is refused at submit and queues nothing; TakeModel of it, and
        // TakeUpscaler of a model or an image job, throw INVALID_ARGUMENT.
        string x4 = Path.Combine(UpscalerDir(), "x4");
        KilnUpscaleOptions o = UpscaleOptions(8, 20, KilnSeamless.None);
        byte[] blocking;
        using (KilnUpscaler u = KilnUpscaler.Load(runtime, x4))
        using (KilnImage picture = KilnImage.Create(24, 20, UpscalerPicture()))
        using (KilnImage up = u.Upscale(picture, o))
            blocking = up.ToArray();
        var counts = new EventCounts();
        var js = counts.Settings();
        var lines = new List<string>();
        var rt = new KilnRuntime(new KilnRuntimeSettings { Log = (level, text) => { lock (lines) lines.Add(text); }, LogLevel = KilnLogLevel.Debug });
        object sink = Field(rt.Handle, "Sink");
        Func<int> references = () => (int)Field(sink, "references");
        KilnJob job = KilnUpscaler.SubmitLoad(rt, x4, js);
        rt.Dispose();
        Equal(1, references(), "leases while only the job holds the sink");
        ulong id = job.Id;
        KilnUpscaler loaded, second;
        using (job)
        {
            KilnJobStatus s = PollUntilEnded(job);
            Equal(KilnJobState.Succeeded, s.State, "upscaler load job state (" + job.ErrorMessage + ")");
            Console.WriteLine("    upscaler load job: step " + s.Step + " of " + s.TotalSteps + ", preview step " + s.PreviewStep);
            Check(s.Step == s.TotalSteps && s.TotalSteps > 1 && s.PreviewStep == 0, "upscaler load job progress: all of its graphs' KiB, no preview");
            loaded = job.TakeUpscaler();
            second = job.TakeUpscaler();
            Check(loaded.Handle.DangerousGetHandle() != second.Handle.DangerousGetHandle(), "TakeUpscaler gives a handle of its own per call");
            Check(ReferenceEquals(sink, Field(loaded.Handle, "Sink")), "the job's upscaler holds the runtime's log sink");
            Equal(3, references(), "leases with the job and its two upscalers");
            KilnException e = Throws(() => job.TakeModel(), KilnStatus.InvalidArgument, "TakeModel of an upscaler load job");
            Check(e.NativeMessage.Contains("kiln_job_upscaler"), "message names kiln_job_upscaler: " + e.NativeMessage);
            KilnModel noModel;
            Equal(KilnStatus.InvalidArgument, job.TryTakeModel(out noModel).Status, "TryTakeModel of an upscaler load job");
            Check(noModel == null, "TryTakeModel of an upscaler load job gave a model");
            int w, h;
            Throws(() => job.ImageSize(out w, out h), KilnStatus.InvalidArgument, "ImageSize of an upscaler load job");
        }
        WaitUntilFreed(id);
        Check(counts.Finished == 1 && counts.Previews == 0, "upscaler load job events: " + counts.Previews + " previews, " + counts.Finished + " Finished");
        try { job.TakeUpscaler().Dispose(); throw new Exception("TakeUpscaler of a disposed job"); }
        catch (ObjectDisposedException) { }
        second.Dispose();
        WaitFor(() => references() == 1, "leases with only the first upscaler: " + references());
        using (loaded)
        using (KilnImage picture = KilnImage.Create(24, 20, UpscalerPicture()))
        {
            Equal(4, loaded.Scale, "the job's upscaler's Scale");
            using (KilnImage up = loaded.Upscale(picture, o))
            {
                Equal(96, up.Width, "upscaled width");
                SamePixels(blocking, up.ToArray(), "SubmitLoad job's upscaler vs KilnUpscaler.Load's");
            }
        }
        Equal(0, references(), "leases after the last upscaler");
        Check(!((GCHandle)Field(sink, "self")).IsAllocated, "the sink's GCHandle is freed with the last lease");

        // Checked at submit: nothing queued, no event.
        int refused = 0;
        var counting = new KilnJobSettings { OnEvent = ev => Interlocked.Increment(ref refused) };
        object[] before = LiveJobStates();
        KilnException missing = Throws(() => KilnUpscaler.SubmitLoad(runtime, Path.Combine(UpscalerDir(), "no-such-upscaler"), counting).Dispose(), KilnStatus.ModelNotFound, "SubmitLoad of a missing upscaler");
        Check(missing.NativeMessage.Contains("no-such-upscaler"), "message names the path: " + missing.NativeMessage);
        Throws(() => KilnUpscaler.SubmitLoad(runtime, null, counting).Dispose(), KilnStatus.NullArgument, "SubmitLoad of a null path");
        try { KilnUpscaler.SubmitLoad(runtime, "bad\0path", counting).Dispose(); throw new Exception("a NUL in the path accepted"); }
        catch (ArgumentException) { }
        try { KilnUpscaler.SubmitLoad(null, x4).Dispose(); throw new Exception("null runtime accepted"); }
        catch (ArgumentNullException) { }
        var gone = new KilnRuntime();
        gone.Dispose();
        try { KilnUpscaler.SubmitLoad(gone, x4, counting).Dispose(); throw new Exception("submitted on a disposed runtime"); }
        catch (ObjectDisposedException) { }
        Thread.Sleep(20);
        NoNewJob(before, Volatile.Read(ref refused), "upscaler-load submits");

        // The other way round: a model load and an image job have no upscaler.
        using (KilnJob modelJob = KilnModel.SubmitLoad(runtime, modelDir))
        using (KilnJob imageJob = model.Submit(Quick("an image", 1)))
        {
            Equal(KilnJobState.Succeeded, PollUntilEnded(modelJob).State, "model load job state");
            Equal(KilnJobState.Succeeded, PollUntilEnded(imageJob).State, "image job state");
            Throws(() => modelJob.TakeUpscaler(), KilnStatus.InvalidArgument, "TakeUpscaler of a model load job");
            KilnUpscaler none;
            Equal(KilnStatus.InvalidArgument, imageJob.TryTakeUpscaler(out none).Status, "TryTakeUpscaler of an image job");
            Check(none == null, "TryTakeUpscaler of an image job gave an upscaler");
            Throws(() => imageJob.TakeUpscaler(), KilnStatus.InvalidArgument, "TakeUpscaler of an image job");
        }
    }

    static void ModelJobsLeaseTheLog()
    {
        // A job's model logs through the runtime's handler like a loaded one: the job leases the
        // runtime's log sink, and each model taken from it a lease of its own, so the runtime
        // and the job may be disposed first; the sink's GCHandle goes with the last lease.
        var lines = new List<string>();
        var rt = new KilnRuntime(new KilnRuntimeSettings { Log = (level, text) => { lock (lines) lines.Add(text); }, LogLevel = KilnLogLevel.Debug });
        object sink = Field(rt.Handle, "Sink");
        Func<int> references = () => (int)Field(sink, "references");
        KilnJob job = KilnModel.SubmitLoad(rt, modelDir);
        rt.Dispose();
        Equal(1, references(), "leases while only the job holds the sink");
        Equal(KilnJobState.Succeeded, PollUntilEnded(job).State, "load job of a disposed runtime (" + job.ErrorMessage + ")");
        KilnModel m = job.TakeModel();
        Check(ReferenceEquals(sink, Field(m.Handle, "Sink")), "the job's model holds the runtime's log sink");
        Equal(2, references(), "leases with the job and its model");
        ulong id = job.Id;
        job.Dispose();
        WaitUntilFreed(id);
        WaitFor(() => references() == 1, "leases once the job is freed: " + references());
        KilnJob lora = m.SubmitWithLoras(new[] { new KilnLoraSpec(Path.Combine(FixturesDir(), "lora", "detail.kohya.safetensors"), 0.8f) });
        Equal(KilnJobState.Succeeded, PollUntilEnded(lora).State, "LoRA job (" + lora.ErrorMessage + ")");
        KilnModel styled = lora.TakeModel();
        Check(ReferenceEquals(sink, Field(styled.Handle, "Sink")), "the LoRA job's model holds the log sink");
        id = lora.Id;
        lora.Dispose();
        WaitUntilFreed(id);
        m.Dispose();
        WaitFor(() => references() == 1, "leases with only the LoRA model: " + references());
        int before;
        lock (lines) before = lines.Count;
        using (KilnImage image = styled.Generate(Quick("logged", 1))) Equal(64, image.Width, "the job's model generates");
        lock (lines) Console.WriteLine("    " + lines.Count + " log lines (" + (lines.Count - before) + " from the generation)");
        styled.Dispose();
        Equal(0, references(), "leases after the last model");
        Check(!((GCHandle)Field(sink, "self")).IsAllocated, "the sink's GCHandle is freed with the last lease");
    }

    static void DefaultExampleRequest()
    {
        // What Txt2Img does (defaults, seed 42), written for tests/csharp.rs to compare
        // with the C API's pixels for the same request.
        using (KilnImage image = model.Generate(new KilnGenerateSettings { Prompt = "mossy stone brick wall", Seed = 42 }))
            File.WriteAllBytes(Path.Combine(scratch, "default-seed42.rgba"), image.ToArray());
    }

    static int Main(string[] args)
    {
        if (args.Length < 2 || args.Length > 4)
        {
            Console.Error.WriteLine("usage: KilnTests.exe MODEL_DIR SCRATCH_DIR [CONTROLNET_MODEL_DIR [REFINER_MODEL_DIR]]");
            return 2;
        }
        modelDir = args[0];
        scratch = args[1];
        controlNetModelDir = args.Length >= 3 ? args[2] : null;
        refinerModelDir = args.Length == 4 ? args[3] : null;
        Directory.CreateDirectory(scratch);
        var tests = new List<KeyValuePair<string, Action>>
        {
            new KeyValuePair<string, Action>("version matches the header", VersionMatchesTheHeader),
            new KeyValuePair<string, Action>("struct sizes match the library", StructSizesMatchTheLibrary),
            new KeyValuePair<string, Action>("status names match the library", StatusNamesMatchTheLibrary),
            new KeyValuePair<string, Action>("interop types blittable, Cdecl, explicit UTF-8", InteropTypesAreBlittableAndCdecl),
            new KeyValuePair<string, Action>("callback targets static with [MonoPInvokeCallback]", CallbackTargetsAreStaticAndMarked),
            new KeyValuePair<string, Action>("row flip", RowFlip),
        };
        var modelTests = new List<KeyValuePair<string, Action>>
        {
            new KeyValuePair<string, Action>("model info and providers", ModelInfoAndProviders),
            new KeyValuePair<string, Action>("generate, generate-into and job pixels agree", GeneratePaths),
            new KeyValuePair<string, Action>("UTF-8 prompts and paths", Utf8PromptsAndPaths),
            new KeyValuePair<string, Action>("LoRAs change the image; bad files throw", LorasChangeTheImage),
            new KeyValuePair<string, Action>("LoRA text-encoder scale: query, pixels, non-finite throws", LoraTextEncoderScale),
            new KeyValuePair<string, Action>("SDXL Prompt2 on tiny-sdxl", SdxlSecondPrompt),
            new KeyValuePair<string, Action>("SDXL embedding gives the golden; SD 1.x file throws", SdxlEmbeddingMatchesTheGolden),
            new KeyValuePair<string, Action>("torch CPU seed gives diffusers' image; Kiln's noise differs; generator 7 throws", TorchSeedGivesDiffusersImage),
            new KeyValuePair<string, Action>("torch CUDA seed gives diffusers' image; TorchCpu's differs", TorchCudaSeedGivesDiffusersImage),
            new KeyValuePair<string, Action>("variation seed gives diffusers' image; strength 0 differs; strength 2 throws", VariationSeedGivesDiffusersImage),
            new KeyValuePair<string, Action>("int8 load: info reports it, golden within the spread, job's bytes, quantization 7 throws", QuantizedLoadStaysWithinTheSpread),
            new KeyValuePair<string, Action>("attention: default and fused report 12 fused layers, exported 0, pictures within 2; attention 9 throws", FusedAttentionMatchesTheExportedGraph),
            new KeyValuePair<string, Action>("LoRA slots: 121 slotted layers, plain pixels unchanged, a fed LoRA within 2 of the merged one; lora_slots 2 refused", LoraSlotsFeedTheLoras),
            new KeyValuePair<string, Action>("error statuses and messages", ErrorStatuses),
            new KeyValuePair<string, Action>("image post-processing", ImagePostProcessing),
            new KeyValuePair<string, Action>("extend, make tileable, model sprite", TextureHelpers),
            new KeyValuePair<string, Action>("extend and make-tileable jobs: blocking bytes, progress, submit errors", TextureJobs),
            new KeyValuePair<string, Action>("job callbacks fire on a worker thread", CallbacksFireOnAWorkerThread),
            new KeyValuePair<string, Action>("throwing handlers never reach native code", ThrowingHandlersNeverReachNativeCode),
            new KeyValuePair<string, Action>("cancel and stale ids", CancelAndStaleIds),
            new KeyValuePair<string, Action>("dispose while running", DisposeWhileRunning),
            new KeyValuePair<string, Action>("CancelAll stops every job", CancelAllStopsEveryJob),
            new KeyValuePair<string, Action>("upscaler: goldens, seamless, raw C call's bytes", UpscalerMatchesTheGoldensAndTheCApi),
            new KeyValuePair<string, Action>("upscaler: bad paths, graphs and options throw", UpscalerErrors),
            new KeyValuePair<string, Action>("upscaler: cancel from another thread", UpscalerCancelFromAnotherThread),
            new KeyValuePair<string, Action>("upscale jobs: blocking bytes, graph runs as steps, submit errors, dispose after submit", UpscaleJobs),
            new KeyValuePair<string, Action>("upscale jobs: cancel by job and by upscaler", UpscaleJobCancel),
            new KeyValuePair<string, Action>("upscaled jobs: generation + seamless upscale bytes, one step count, submit errors", UpscaledJobs),
            new KeyValuePair<string, Action>("model jobs: load and LoRA switch give the blocking bytes, TakeModel, submit and job errors", ModelJobs),
            new KeyValuePair<string, Action>("seamless job: Seamless()'s bytes, source disposed after submit, progress in KiB, bad axes", SeamlessJob),
            new KeyValuePair<string, Action>("upscaler load job: Load's bytes, runtime disposed after submit, progress in KiB, TakeUpscaler, submit errors", UpscalerLoadJob),
            new KeyValuePair<string, Action>("model jobs: taken models lease the runtime's log sink", ModelJobsLeaseTheLog),
            new KeyValuePair<string, Action>("default example request", DefaultExampleRequest),
        };
        if (controlNetModelDir != null)
            modelTests.Add(new KeyValuePair<string, Action>("ControlNet shapes the image; preprocessors; errors", ControlNetShapesTheImage));
        if (refinerModelDir != null)
            modelTests.Add(new KeyValuePair<string, Action>("refiner hand-off gives the golden; bad refiners throw", RefinerHandOffMatchesTheGolden));
        int passed = 0, failed = 0;
        Action<string, Action> run = (name, test) =>
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            try
            {
                test();
                passed++;
                Console.WriteLine("PASS " + name + " (" + clock.ElapsedMilliseconds + " ms)");
            }
            catch (Exception e)
            {
                failed++;
                Console.WriteLine("FAIL " + name + " (" + clock.ElapsedMilliseconds + " ms): " + e);
            }
        };
        foreach (var t in tests) run(t.Key, t.Value);
        try
        {
            runtime = new KilnRuntime();
            model = KilnModel.Load(runtime, modelDir);
        }
        catch (Exception e)
        {
            Console.WriteLine("FAIL loading the runtime and " + modelDir + ": " + e);
            failed += modelTests.Count;
            modelTests.Clear();
        }
        foreach (var t in modelTests) run(t.Key, t.Value);
        if (model != null) model.Dispose();
        if (runtime != null) runtime.Dispose();
        Console.WriteLine(passed + " passed, " + failed + " failed");
        return Exit(failed == 0 ? 0 : 1);
    }

    [DllImport("libc", EntryPoint = "_exit", CallingConvention = CallingConvention.Cdecl)]
    static extern void PosixExit(int code);

    static int Exit(int code)
    {
        // Mono 6.8's shutdown (and Environment.Exit) waits, spinning, for native threads
        // that ever called into managed code: Kiln's job workers, which never end
        // (mono/mono#20466, fixed in Mono 6.12). Flush and leave without that shutdown.
        Console.Out.Flush();
        Console.Error.Flush();
        if (Environment.OSVersion.Platform == PlatformID.Unix) PosixExit(code);
        return code;
    }
}
#endif
