package harness

import (
	"context"
	"errors"
	"fmt"
	"os/exec"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// RedisImageRepo is the image of the example plan (examples/redis), as `hab pkg export
// container habring/redis` names it; RedisAuthSecret is the Secret examples/ring.yaml
// takes its password from (key "password").
const (
	RedisImageRepo  = "habring/redis"
	RedisAuthSecret = "redis-auth"
)

// ExampleSecrets creates the Secrets examples/ring.yaml names, as its comments tell a
// user to: the ring key (`hab ring key generate main`) and the Redis password. It
// returns the password.
func ExampleSecrets(ctx context.Context, client kubernetes.Interface, ns string) (string, error) {
	const password = "habring-example-4f2a9c"
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "ring-key", Namespace: ns},
			StringData: map[string]string{"ring-key": "SYM-SEC-1\nmain-20261201000000\n\nc2VjcmV0IG9mIHRoZSBleGFtcGxlIHJpbmc="}},
		{ObjectMeta: metav1.ObjectMeta{Name: RedisAuthSecret, Namespace: ns}, StringData: map[string]string{"password": password}},
	} {
		if _, err := client.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("secret %s/%s: %w", ns, s.Name, err)
		}
	}
	return password, nil
}

// RedisPassword reads the password of the example's Redis from its Secret.
func RedisPassword(ctx context.Context, client kubernetes.Interface, ns string) (string, error) {
	s, err := client.CoreV1().Secrets(ns).Get(ctx, RedisAuthSecret, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return string(s.Data["password"]), nil
}

// ErrNoRedis is why the HA Redis example cannot run here.
var ErrNoRedis = errors.New("redis-server is not installed (apt-get install redis-server)")

// RedisSupported says whether this machine has the redis-server the example's pods run.
func RedisSupported() error {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return ErrNoRedis
	}
	return nil
}
