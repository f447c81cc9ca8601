// Generates a texture without blocking the frame, model load included: Start submits the
// model load as a job, Update polls it once a frame (a cheap, non-blocking call) behind a
// loading bar, then submits the generation and polls that, and when it succeeds the pixels
// go into the renderer's texture. OnDestroy cancels and frees whatever is left.
// Put the component on any object with a Renderer; set modelPath to a Kiln model folder
// (e.g. StreamingAssets/kiln-tiny-textures). Progress (0..1) and Status are for a UI.
#if UNITY_5_3_OR_NEWER
using System.IO;
using Kiln;
using Kiln.Interop;
using UnityEngine;

public sealed class KilnFrameLoopSample : MonoBehaviour
{
    public string modelPath = "kiln-tiny-textures";
    public string prompt = "mossy stone brick wall";
    public ulong seed = 42;
    public bool seamless = true;

    /// <summary>The current phase's progress, 0 to 1: the model load's (KiB of its graphs opened), then the generation's (U-Net steps).</summary>
    public float Progress { get; private set; }
    /// <summary>What is happening, for a label.</summary>
    public string Status { get; private set; }

    KilnRuntime runtime;
    KilnJob loading;   // the model load, until it ends
    KilnModel model;
    KilnJob job;       // the generation

    void Start()
    {
        string dir = Path.IsPathRooted(modelPath) ? modelPath : Path.Combine(Application.streamingAssetsPath, modelPath);
        try
        {
            runtime = new KilnRuntime(new KilnRuntimeSettings { Log = (level, text) => Debug.Log("[kiln " + level + "] " + text) });
            // Seconds for an SD 1.5-size model: a job, so the frame loop goes on meanwhile.
            loading = KilnModel.SubmitLoad(runtime, dir, seamless ? KilnSeamless.XY : KilnSeamless.None);
            Status = "Loading the model";
        }
        catch (KilnException e)
        {
            Fail(e.Message);
        }
    }

    void Update()
    {
        if (loading != null)
            PollLoad();
        else if (job != null)
            PollGeneration();
    }

    void PollLoad()
    {
        KilnJobStatus s = loading.Poll();
        Progress = s.TotalSteps > 0 ? (float)s.Step / s.TotalSteps : 0f;
        if (!s.Ended) return;
        try
        {
            if (s.State != KilnJobState.Succeeded)
            {
                Fail("the model load ended " + s.State + ": " + loading.ErrorMessage);
                return;
            }
            model = loading.TakeModel();
            job = model.Submit(new KilnGenerateSettings { Prompt = prompt, Seed = seed }, new KilnJobSettings { Priority = 1 });
            Progress = 0f;
            Status = "Generating";
        }
        catch (KilnException e)
        {
            Fail(e.Message);
        }
        finally
        {
            loading.Dispose();
            loading = null;
        }
    }

    void PollGeneration()
    {
        KilnJobStatus s = job.Poll();
        if (s.TotalSteps > 0) Progress = (float)s.Step / s.TotalSteps;
        if (!s.Ended) return;
        if (s.State == KilnJobState.Succeeded)
        {
            Texture2D tex = KilnTexture.ToTexture(job);
            tex.wrapMode = seamless ? TextureWrapMode.Repeat : TextureWrapMode.Clamp;
            GetComponent<Renderer>().material.mainTexture = tex;
            Status = "Done";
        }
        else
        {
            Fail("the job ended " + s.State + ": " + job.ErrorMessage);
        }
        job.Dispose();
        job = null;
    }

    void Fail(string message)
    {
        Status = "Kiln: " + message;
        Debug.LogError(Status);
        enabled = false;
    }

    void OnDestroy()
    {
        if (loading != null) loading.Dispose();
        if (job != null) job.Dispose();
        if (model != null) model.Dispose();
        if (runtime != null) runtime.Dispose();
    }
}
#endif
