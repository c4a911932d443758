package check

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"strings"
	"time"
)

// A Finding is one line of a check's outcome: one thing it looked at, a problem or not.
type Finding struct {
	Message string
	// Problem fails the check (or warns, by its Severity); Skipped says it could not look.
	Problem, Skipped bool
	// Vars fill the check's Hint beside the installation's and the scope's.
	Vars map[string]string
}

func passed(format string, args ...any) Finding {
	return Finding{Message: fmt.Sprintf(format, args...)}
}

func problem(format string, args ...any) Finding {
	return Finding{Message: fmt.Sprintf(format, args...), Problem: true}
}

func skipped(format string, args ...any) Finding {
	return Finding{Message: fmt.Sprintf(format, args...), Skipped: true}
}

// with returns f with the hint variables kv (name, value, name, value...).
func (f Finding) with(kv ...string) Finding {
	f.Vars = maps.Clone(f.Vars)
	if f.Vars == nil {
		f.Vars = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		f.Vars[kv[i]] = kv[i+1]
	}
	return f
}

// cannotRead is a check's problem when the API server refuses or fails a read it needs.
func cannotRead(verb, resource, ns string, err error) Finding {
	where := ""
	if ns != "" {
		where = " in " + ns
	}
	return problem("%s %s%s: %v", verb, resource, where, err).with("Verb", verb, "Resource", resource, "Namespace", ns)
}

// hintKeys are every variable a hint may use, empty unless the installation, the scope or
// the finding sets it: a hint naming any other fails to render, and the tests see it.
var hintKeys = []string{
	"Release", "ReleaseNamespace", "Config", "Index", "Chart", "Context", "ServiceNamespace",
	"Namespace", "Ring", "Pod", "Pods", "Owner", "Case", "Verb", "Resource", "Selector",
	"ServiceAccount", "Role", "Fix", "Depart", "Labels",
}

// chart is the chart hints upgrade with: this repository's, as README installs it.
const chart = "deploy/helm/habring"

// hintVars are the installation's names for the hints: its Helm release where Helm
// installed it (the annotations Helm puts on what it manages), its configuration's name.
func (c *Checker) hintVars(ctx context.Context, s *scope) map[string]any {
	vars := make(map[string]any, len(hintKeys))
	for _, k := range hintKeys {
		vars[k] = ""
	}
	vars["Chart"], vars["Context"], vars["Index"] = chart, c.Config.Context, "0"
	if inst, _ := c.installation(ctx); inst != nil {
		vars["Release"], vars["ReleaseNamespace"] = inst.release, inst.releaseNamespace
		vars["Config"], vars["Index"] = inst.config.Name, fmt.Sprint(inst.index)
		if svc := inst.hook.ClientConfig.Service; svc != nil {
			vars["ServiceNamespace"] = svc.Namespace
		}
	}
	vars["Namespace"], vars["Ring"], vars["Pod"] = s.ns, s.ring, s.pod
	return vars
}

// runChecks runs the categories in order, each check for each of its category's scopes,
// and stops at a fatal check's problem. With --wait, a Retry check's problem is asked
// again (on fresh reads) until it passes or the wait is over, saying so on Progress.
func (c *Checker) runChecks(ctx context.Context, cats []Category) *Report {
	r := &Report{}
	for _, cat := range cats {
		for _, s := range cat.scopes(c, ctx) {
			for i := range cat.Checks {
				if ctx.Err() != nil {
					r.Interrupted = true
					return r
				}
				chk := &cat.Checks[i]
				found := c.attempt(ctx, chk, s)
				fatal := false
				for _, f := range found {
					res := Result{Category: cat.Name, Section: s.heading, ID: chk.ID, Description: chk.Description, Message: f.Message, Status: Pass}
					switch {
					case f.Skipped:
						res.Status = Skip
					case f.Problem:
						res.Status, res.Hint = Fail, c.renderHint(ctx, chk, s, f)
						if chk.Severity == Warning {
							res.Status = Warn
						}
						fatal = fatal || chk.Fatal
					}
					r.Results = append(r.Results, res)
				}
				if fatal {
					r.Stopped = chk.ID
					return r
				}
			}
		}
	}
	return r
}

// retryEvery is how long --wait waits between two tries of a check.
const retryEvery = 2 * time.Second

func (c *Checker) attempt(ctx context.Context, chk *Check, s *scope) []Finding {
	last := ""
	for {
		found := chk.run(c, ctx, s)
		i := firstProblem(found)
		every := cmp.Or(c.retryEvery, retryEvery)
		// A read the API server refused stays refused: RBAC does not change on its own.
		if i < 0 || !chk.Retry || found[i].Vars["Verb"] != "" || c.deadline.IsZero() || !time.Now().Add(every).Before(c.deadline) {
			return found
		}
		if msg := found[i].Message; msg != last {
			last = msg
			fmt.Fprintf(c.progress(), "waiting for %s (until %s): %s\n", chk.ID, c.deadline.Format(time.TimeOnly), msg)
		}
		select {
		case <-ctx.Done():
			return found
		case <-time.After(every):
		}
		c.forget() // ask the API server again, not the reads of the last try
	}
}

func firstProblem(found []Finding) int {
	for i, f := range found {
		if f.Problem {
			return i
		}
	}
	return -1
}

func (c *Checker) renderHint(ctx context.Context, chk *Check, s *scope, f Finding) string {
	vars := c.hintVars(ctx, s)
	for k, v := range f.Vars {
		vars[k] = v
	}
	var b strings.Builder
	if err := chk.hint.Execute(&b, vars); err != nil {
		return fmt.Sprintf("(the hint of %s failed to render: %v; this is a bug in habring check)", chk.ID, err)
	}
	return strings.TrimSpace(b.String())
}

// memo is a read made once per try: the checks of a run share the API server's answers,
// and --wait forgets them before it asks again.
type memo struct {
	value any
	err   error
}

func cached[T any](c *Checker, key string, load func() (T, error)) (T, error) {
	if m, ok := c.memo[key]; ok {
		v, _ := m.value.(T)
		return v, m.err
	}
	v, err := load()
	if c.memo == nil {
		c.memo = map[string]memo{}
	}
	c.memo[key] = memo{value: v, err: err}
	return v, err
}

func (c *Checker) forget() { clear(c.memo) }
