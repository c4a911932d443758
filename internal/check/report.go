package check

import (
	"fmt"
	"io"
	"strings"
)

// Status is a check's outcome.
type Status int

// Outcomes. Only Fail makes `habring check` exit non-zero.
const (
	Pass Status = iota
	Warn
	Fail
	Skip
)

func (s Status) mark() string {
	switch s {
	case Pass:
		return "✓"
	case Warn:
		return "‼"
	case Fail:
		return "×"
	}
	return "-"
}

// Result is one check: what was found, and for a failure or warning what to do about it.
type Result struct {
	Section string
	Status  Status
	// Message says what was checked and what was found, in one line.
	Message string
	// Fix is the command or step that fixes a failure or warning.
	Fix string
}

// Report collects results in the order they were checked.
type Report struct {
	Results []Result
	section string
}

// Section starts a heading; the results that follow are under it.
func (r *Report) Section(name string) { r.section = name }

func (r *Report) add(s Status, fix, format string, args ...any) {
	r.Results = append(r.Results, Result{Section: r.section, Status: s, Message: fmt.Sprintf(format, args...), Fix: fix})
}

// Pass records a passed check.
func (r *Report) Pass(format string, args ...any) { r.add(Pass, "", format, args...) }

// Warn records a warning and what to do about it.
func (r *Report) Warn(fix, format string, args ...any) { r.add(Warn, fix, format, args...) }

// Fail records a failed check and the command that fixes it.
func (r *Report) Fail(fix, format string, args ...any) { r.add(Fail, fix, format, args...) }

// Skip records a check that could not run, and why.
func (r *Report) Skip(format string, args ...any) { r.add(Skip, "", format, args...) }

// Failed counts the failed checks.
func (r *Report) Failed() int {
	n := 0
	for _, res := range r.Results {
		if res.Status == Fail {
			n++
		}
	}
	return n
}

// Write prints the report as `linkerd check` does: a heading per section, a line per
// check, the fix indented under it, and a summary.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	section := ""
	for i, res := range r.Results {
		if i == 0 || res.Section != section {
			if i > 0 {
				b.WriteString("\n")
			}
			section = res.Section
			fmt.Fprintf(&b, "%s\n%s\n", section, strings.Repeat("-", len([]rune(section))))
		}
		fmt.Fprintf(&b, "%s %s\n", res.Status.mark(), res.Message)
		if res.Fix != "" {
			for l := range strings.SplitSeq(res.Fix, "\n") {
				fmt.Fprintf(&b, "    %s\n", l)
			}
		}
	}
	warned := 0
	for _, res := range r.Results {
		if res.Status == Warn {
			warned++
		}
	}
	switch f := r.Failed(); {
	case f > 0:
		fmt.Fprintf(&b, "\nStatus check results are × (%d failed, %d warnings)\n", f, warned)
	case warned > 0:
		fmt.Fprintf(&b, "\nStatus check results are ✓ (%d warnings)\n", warned)
	default:
		b.WriteString("\nStatus check results are ✓\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
