// Unity Editor only: before the Editor reloads scripts (entering play mode, recompiling),
// stop every Kiln job, so no worker thread calls a trampoline in the unloaded domain.
#if UNITY_EDITOR
using UnityEditor;

namespace Kiln
{
    [InitializeOnLoad]
    static class KilnEditorReload
    {
        static KilnEditorReload()
        {
            AssemblyReloadEvents.beforeAssemblyReload += () =>
            {
                int left = KilnJob.CancelAll(10000);
                if (left > 0) UnityEngine.Debug.LogError("Kiln: " + left + " job(s) did not stop before the script reload");
            };
        }
    }
}
#endif
