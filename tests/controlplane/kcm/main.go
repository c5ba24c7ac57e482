// kube-controller-manager, unchanged, except that the Job controller's timing variables (exported by
// k8s.io/kubernetes/pkg/controller/job for tests, and without a flag) can be set from the environment:
//
//	WD_JOB_POD_FAILURE_BACKOFF      first delay before a failed pod is replaced (upstream: 10s, doubling)
//	WD_JOB_MAX_POD_FAILURE_BACKOFF  the cap of that doubling                     (upstream: 10m)
//	WD_JOB_SYNC_BATCH_PERIOD        how long Job events are batched before a sync (upstream: 1s)
//
// Unset variables keep the upstream values. Everything else is the real controller-manager's main.
package main

import (
	"fmt"
	"os"
	"time"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"k8s.io/kubernetes/pkg/controller/job"
)

func setDuration(env string, target *time.Duration) {
	v, ok := os.LookupEnv(env)
	if !ok || v == "" {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		fmt.Fprintf(os.Stderr, "%s=%q: want a positive Go duration such as 200ms\n", env, v)
		os.Exit(2)
	}
	*target = d
}

func main() {
	setDuration("WD_JOB_POD_FAILURE_BACKOFF", &job.DefaultJobPodFailureBackOff)
	setDuration("WD_JOB_MAX_POD_FAILURE_BACKOFF", &job.MaxJobPodFailureBackOff)
	setDuration("WD_JOB_SYNC_BATCH_PERIOD", &job.SyncJobBatchPeriod)
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
