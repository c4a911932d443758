// Command failover runs the failover scenarios (test/failover) against habring and the
// seed's bootstrap StatefulSet, each running the example HA Redis with writers adding
// unique integers through redis-master, on a local control plane whose pods really run;
// it prints a line per trial, a table of medians and worsts, and a summary line. `make
// failover` runs it; it needs root and redis-server.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/habring/habring/test/failover"
	"github.com/habring/habring/test/harness"
)

func main() {
	fs := flag.NewFlagSet("failover", flag.ExitOnError)
	dir := fs.String("dir", "", "state directory: cluster, logs, every container's output (default: a new temporary one, removed when all passed)")
	only := fs.String("scenario", "", "run only scenarios whose name matches this regular expression")
	trials := fs.Int("trials", 5, "trials of each scenario, each on fresh rings")
	setup := fs.String("setup", "", "run only the setups whose name matches this regular expression (habring, bootstrap StatefulSet); the summary line still names both")
	converge := fs.Duration("converge", 2*time.Minute, "how long a ring gets after a disruption or its heal to have one master behind redis-master with its replicas")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `failover: what a Redis failover loses, measured like Jepsen, on habring and on the seed's
bootstrap StatefulSet side by side (needs root, iproute2, util-linux, redis-server).
Writers add unique integers to a set through redis-master (plain, and confirmed with
WAIT 1); each write is acknowledged, failed or indeterminate; after each disruption the
set is read from every node. The last line, for scripts:
  failover: habring S scenarios, T trials; WAIT-1 writes lost W (outside partitions W0); acknowledged lost A; most masters through redis-master M; bootstrap StatefulSet: WAIT-1 lost W', acknowledged lost A', most masters through redis-master M'
It exits 1 when W0 > 0 or M > 1 or a habring trial could not be measured, 2 when it
could not run.

Flags:
`)
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, *dir, *only, *setup, *trials, *converge)
	if err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(ctx context.Context, dir, only, setup string, trials int, converge time.Duration) (int, error) {
	re, err := regexp.Compile(only)
	if err != nil {
		return 0, fmt.Errorf("--scenario: %w", err)
	}
	setupRe, err := regexp.Compile(setup)
	if err != nil {
		return 0, fmt.Errorf("--setup: %w", err)
	}
	var setups []failover.Setup
	for _, s := range failover.Setups {
		if setupRe.MatchString(s.Name) {
			setups = append(setups, s)
		}
	}
	if len(setups) == 0 {
		return 0, fmt.Errorf("--setup %q matches no setup (habring, bootstrap StatefulSet)", setup)
	}
	if trials < 1 {
		return 0, fmt.Errorf("--trials %d: want 1 or more", trials)
	}
	var scenarios []failover.Scenario
	for _, s := range failover.Scenarios {
		if re.MatchString(s.Name) {
			scenarios = append(scenarios, s)
		}
	}
	if len(scenarios) == 0 {
		return 0, fmt.Errorf("--scenario %q matches no scenario", only)
	}
	if err := harness.RedisSupported(); err != nil {
		return 0, err
	}
	keep := dir != ""
	if dir == "" {
		if dir, err = os.MkdirTemp("", "habring-failover-"); err != nil {
			return 0, err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return 0, err
	}
	st, err := harness.StartStack(ctx, dir, 200, os.Stderr)
	if err != nil {
		return 0, fmt.Errorf("%w (logs in %s)", err, dir)
	}
	defer st.Stop()
	names := make([]string, len(setups))
	for i, s := range setups {
		names[i] = s.Name
	}
	fmt.Fprintf(os.Stderr, "failover: %d scenario(s) × %d trial(s) on %s\n", len(scenarios), trials, strings.Join(names, " and "))
	start := time.Now()
	results := failover.Run(ctx, failover.Env{Client: st.Client, Config: st.Cluster.Config, Runner: st.Runner, Progress: os.Stderr, Converge: converge},
		scenarios, setups, trials)
	table(results)
	h, b := failover.Total(results, true), failover.Total(results, false)
	errs, habringErrs := 0, 0
	for _, r := range results {
		if r.Err != nil {
			errs++
			if r.Setup == failover.Setups[0].Name {
				habringErrs++
			}
		}
	}
	fmt.Printf("\n%d trial(s) in %s, %d could not be measured; logs in %s\n", len(results), time.Since(start).Round(time.Second), errs, dir)
	fmt.Printf("failover: habring %d scenarios, %d trials; WAIT-1 writes lost %d (outside partitions %d); acknowledged lost %d; most masters through redis-master %d; bootstrap StatefulSet: WAIT-1 lost %d, acknowledged lost %d, most masters through redis-master %d\n",
		h.Scenarios, h.Trials, h.Wait1Lost, h.Wait1LostOutsidePartitions, h.AckedLost, h.MostReachable, b.Wait1Lost, b.AckedLost, b.MostReachable)
	if ctx.Err() != nil {
		return 2, nil
	}
	if errs == 0 && !keep {
		_ = os.RemoveAll(dir)
	}
	if h.Wait1LostOutsidePartitions > 0 || h.MostReachable > 1 || habringErrs > 0 {
		return 1, nil
	}
	return 0, nil
}

// table prints, per scenario and setup, the median and worst of each figure over trials.
func table(results []failover.Result) {
	type key struct{ scenario, setup string }
	var order []key
	by := map[key][]failover.Result{}
	for _, r := range results {
		k := key{r.Scenario, r.Setup}
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], r)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSCENARIO\tSETUP\tTRIALS\tLOST (ACKED)\tLOST (WAIT 1)\tUNAVAILABLE s\tSWITCH s\tMASTERS\tTHROUGH SERVICE\tDEPOSED ACKS")
	for _, k := range order {
		var lost, lostW, unavail, sw, masters, reach, deposed []float64
		n := 0
		for _, r := range by[k] {
			if r.Err != nil {
				continue
			}
			n++
			lost, lostW = append(lost, float64(r.Plain.Lost)), append(lostW, float64(r.Wait1.Lost))
			unavail, sw = append(unavail, r.Unavailable.Seconds()), append(sw, r.Switch.Seconds())
			masters, reach, deposed = append(masters, float64(r.Masters)), append(reach, float64(r.MastersReachable)), append(deposed, float64(r.Deposed))
		}
		mw := func(v []float64, f string) string {
			m, w := failover.MedianWorst(v)
			return fmt.Sprintf(f+" / "+f, m, w)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.scenario, k.setup, n, len(by[k]), mw(lost, "%.0f"), mw(lostW, "%.0f"),
			mw(unavail, "%.1f"), mw(sw, "%.1f"), mw(masters, "%.0f"), mw(reach, "%.0f"), mw(deposed, "%.0f"))
	}
	_ = tw.Flush()
	fmt.Println("(each figure: median / worst over the trials that could be measured; SWITCH 0: redis-master never left the old leader)")
}
