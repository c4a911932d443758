package check

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Status is a check's outcome.
type Status string

// Outcomes, as -o json spells them. Only Fail makes `habring check` exit 1.
const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
	Skip Status = "skip"
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

// Result is one line of the report: a check's finding, and for a problem what fixes it.
type Result struct {
	// Category and ID are the check's (see --list); Section is the scope's heading
	// ("namespace shop", "ring shop/main").
	Category, Section, ID string
	Description           string
	Status                Status
	// Message says what was found, in one line.
	Message string
	// Hint is the command or step that fixes a failure or warning.
	Hint string
}

// Report is the results in the order they were checked.
type Report struct {
	Results []Result
	// Stopped is the fatal check whose problem ended the run early, if one did;
	// Interrupted says the run was cancelled (the checks after the last result not run).
	Stopped     string
	Interrupted bool
}

func (r *Report) count(s Status) int {
	n := 0
	for _, res := range r.Results {
		if res.Status == s {
			n++
		}
	}
	return n
}

// Failed counts the failed checks.
func (r *Report) Failed() int { return r.count(Fail) }

// Write prints the report as `linkerd check` does: a heading per section, a line per
// finding, the hint indented under it, and a summary.
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
		if res.Hint != "" {
			for l := range strings.SplitSeq(res.Hint, "\n") {
				fmt.Fprintf(&b, "    %s\n", l)
			}
		}
	}
	if r.Stopped != "" {
		fmt.Fprintf(&b, "\nchecks after %s not run: they depend on it\n", r.Stopped)
	}
	if r.Interrupted {
		b.WriteString("\ninterrupted: the checks after the last line were not run\n")
	}
	switch f, warned := r.Failed(), r.count(Warn); {
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

// SchemaVersion names the shape of -o json. A field is only ever added within a version.
const SchemaVersion = "check.habring.habitat.sh/v1"

// JSONReport is -o json.
type JSONReport struct {
	SchemaVersion string `json:"schemaVersion"`
	// Success is false when a check failed (the exit code is then 1).
	Success  bool `json:"success"`
	Failed   int  `json:"failed"`
	Warnings int  `json:"warnings"`
	// Stopped is the fatal check whose problem ended the run, if one did.
	Stopped string `json:"stopped,omitempty"`
	// Interrupted says the run was cancelled before its end.
	Interrupted bool          `json:"interrupted,omitempty"`
	Sections    []JSONSection `json:"sections"`
}

// JSONSection is one scope's findings.
type JSONSection struct {
	Name     string      `json:"name"`
	Category string      `json:"category"`
	Results  []JSONCheck `json:"results"`
}

// JSONCheck is one finding.
type JSONCheck struct {
	ID          string `json:"id"`
	Description string `json:"description"`
	Result      Status `json:"result"`
	Message     string `json:"message"`
	Hint        string `json:"hint,omitempty"`
}

// JSON is the report in the -o json schema.
func (r *Report) JSON() JSONReport {
	out := JSONReport{SchemaVersion: SchemaVersion, Success: r.Failed() == 0, Failed: r.Failed(), Warnings: r.count(Warn),
		Stopped: r.Stopped, Interrupted: r.Interrupted, Sections: []JSONSection{}}
	for i, res := range r.Results {
		if i == 0 || res.Section != r.Results[i-1].Section {
			out.Sections = append(out.Sections, JSONSection{Name: res.Section, Category: res.Category})
		}
		s := &out.Sections[len(out.Sections)-1]
		s.Results = append(s.Results, JSONCheck{ID: res.ID, Description: res.Description, Result: res.Status, Message: res.Message, Hint: res.Hint})
	}
	return out
}

// WriteJSON prints the report as -o json.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r.JSON())
}

// WriteList prints the catalogue, for --list: each check's ID, severity, and what it wants.
func WriteList(w io.Writer) error {
	var b strings.Builder
	for _, cats := range [][]Category{catalogue, podChecks} {
		for _, cat := range cats {
			for _, chk := range cat.Checks {
				flags := string(chk.Severity)
				if chk.Fatal {
					flags += ",fatal"
				}
				if chk.Retry {
					flags += ",retried"
				}
				fmt.Fprintf(&b, "%-34s %-22s %s\n", chk.ID, flags, chk.Description)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
