package e2e

import (
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/test/harness"
)

// The runner runs a pod as a kubelet would: env as stored, with $(VAR) expanded and the
// downward API resolved; its own hostname; an emptyDir that outlives a crash; the restart
// counted; on deletion SIGTERM, then the pod object removed and its namespace gone.
func TestRunnerRunsPods(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	ns := runningNamespace(t, e)
	script := `echo x >> /data/starts; echo "starts=` + "`wc -l < /data/starts`" + ` host=` + "`hostname`" + ` a=$A"
trap 'echo terminated; exit 0' TERM
sleep 600 & wait`
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "shell", Namespace: ns},
		Spec: corev1.PodSpec{
			Hostname:                      "shell-host",
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Volumes:                       []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			Containers: []corev1.Container{{
				Name: "main", Image: "busybox:stable", Command: []string{"sh", "-c", script},
				Env: []corev1.EnvVar{
					{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "A", Value: "$(IP)-$(NAME_NOT_SET)-$$(IP)"},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
		},
	}
	_, err := e.client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{})
	require.NoError(t, err)

	running := func(restarts int32) *corev1.Pod {
		var got *corev1.Pod
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			p, err := e.client.CoreV1().Pods(ns).Get(t.Context(), "shell", metav1.GetOptions{})
			require.NoError(c, err)
			require.Len(c, p.Status.ContainerStatuses, 1)
			cs := p.Status.ContainerStatuses[0]
			assert.Equal(c, restarts, cs.RestartCount)
			assert.NotNil(c, cs.State.Running, "state %+v", cs.State)
			assert.True(c, harness.PodReady(p), "pod Ready")
			got = p
		}, time.Minute, 100*time.Millisecond)
		return got
	}
	logLine := func(want *regexp.Regexp) {
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			out, err := e.runner.Logs(ns, "shell", "main")
			require.NoError(c, err)
			assert.Regexp(c, want, string(out))
		}, 30*time.Second, 100*time.Millisecond)
	}
	p := running(0)
	ip := regexp.QuoteMeta(p.Status.PodIP)
	logLine(regexp.MustCompile(`starts=1 host=shell-host a=` + ip + `-\$\(NAME_NOT_SET\)-\$\(IP\)`))

	require.NoError(t, e.runner.Kill(ns, "shell", "main"), "crash the container")
	running(1)
	logLine(regexp.MustCompile(`starts=2 host=shell-host`)) // the emptyDir kept the first start

	netns, err := e.runner.Network(ns, "shell")
	require.NoError(t, err)
	require.NoError(t, e.client.CoreV1().Pods(ns).Delete(t.Context(), "shell", metav1.DeleteOptions{}))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := e.client.CoreV1().Pods(ns).Get(t.Context(), "shell", metav1.GetOptions{})
		assert.True(c, apierrors.IsNotFound(err), "pod object removed after its containers stopped: %v", err)
	}, 30*time.Second, 100*time.Millisecond)
	logLine(regexp.MustCompile(`terminated`))
	_, err = os.Stat("/var/run/netns/" + netns.Name)
	require.ErrorIs(t, err, os.ErrNotExist, "the pod's network namespace is removed")
}
