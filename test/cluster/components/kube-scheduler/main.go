// Command kube-scheduler is the upstream kube-scheduler, built from k8s.io/kubernetes so that
// the end-to-end tests run against the real thing on machines without a container engine.
package main

import (
	"os"
	_ "time/tzdata" // as upstream: CronJob time zones

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // as upstream: --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // as upstream: client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // as upstream: version metric
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
