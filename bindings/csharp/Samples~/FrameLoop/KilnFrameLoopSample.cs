// Generates a texture without blocking the frame: Start submits a job, Update polls it
// once a frame (a cheap, non-blocking call) and shows progress, and when it succeeds the
// pixels go into the renderer's texture. OnDestroy cancels and frees whatever is left.
// Put the component on any object with a Renderer; set modelPath to a Kiln model folder
// (e.g. StreamingAssets/kiln-tiny-textures).
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

    KilnRuntime runtime;
    KilnModel model;
    KilnJob job;

    void Start()
    {
        string dir = Path.IsPathRooted(modelPath) ? modelPath : Path.Combine(Application.streamingAssetsPath, modelPath);
        try
        {
            runtime = new KilnRuntime(new KilnRuntimeSettings { Log = (level, text) => Debug.Log("[kiln " + level + "] " + text) });
            // Loading takes a moment; a game would do it behind a loading screen.
            model = KilnModel.Load(runtime, dir, seamless ? KilnSeamless.XY : KilnSeamless.None);
            job = model.Submit(new KilnGenerateSettings { Prompt = prompt, Seed = seed }, new KilnJobSettings { Priority = 1 });
        }
        catch (KilnException e)
        {
            Debug.LogError("Kiln: " + e.Message);
            enabled = false;
        }
    }

    void Update()
    {
        if (job == null) return;
        KilnJobStatus s = job.Poll();
        if (!s.Ended)
        {
            if (s.TotalSteps > 0) Debug.Log("Kiln: step " + s.Step + " / " + s.TotalSteps);
            return;
        }
        if (s.State == KilnJobState.Succeeded)
        {
            Texture2D tex = KilnTexture.ToTexture(job);
            tex.wrapMode = seamless ? TextureWrapMode.Repeat : TextureWrapMode.Clamp;
            GetComponent<Renderer>().material.mainTexture = tex;
        }
        else
        {
            Debug.LogError("Kiln: the job ended " + s.State + ": " + job.ErrorMessage);
        }
        job.Dispose();
        job = null;
    }

    void OnDestroy()
    {
        if (job != null) job.Dispose();
        if (model != null) model.Dispose();
        if (runtime != null) runtime.Dispose();
    }
}
#endif
