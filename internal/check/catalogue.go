package check

import (
	"context"
	"text/template"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/labeler"
)

// Severity is what a check's problem means for the run.
type Severity string

// Severities: only an error makes `habring check` exit 1.
const (
	Error   Severity = "error"
	Warning Severity = "warning"
)

// A Check is one thing `habring check` verifies, as data the runner reads: what must be
// true, what fixes it, and how a problem weighs. Run finds one line per thing checked (a
// namespace has several pods, a ring several service groups).
type Check struct {
	// ID names the check for good: in -o json, --list and the docs. Never reuse one.
	ID string
	// Description is what must be true, in one line.
	Description string
	// Hint is a text/template of the command or step that fixes a problem, filled with the
	// installation it found (.Release, .ReleaseNamespace, .Config, .Chart: see hintVars),
	// the scope's .Namespace, .Ring or .Pod, and the finding's own values.
	Hint     string
	Severity Severity
	// Fatal stops the run at a problem: the checks after it depend on what it checks.
	Fatal bool
	// Retry marks a problem that can go away on its own (endpoints become ready, cainjector
	// fills the caBundle, a labeler takes its label): --wait asks again until it passes.
	Retry bool
	run   func(*Checker, context.Context, *scope) []Finding
	hint  *template.Template
}

// A Category is a group of checks run for each of its scopes: the installation once,
// each namespace, each ring.
type Category struct {
	// Name is the category's name in -o json; each scope's heading is its own.
	Name   string
	Checks []Check
	// scopes are what the checks run for, found when the category's turn comes (after the
	// categories before it, whose findings they read).
	scopes func(*Checker, context.Context) []*scope
}

// scope is one thing a category's checks run for.
type scope struct {
	heading string
	// ns, ring and pod name what is checked; empty where the category has none.
	ns, ring, pod string
}

func once(heading string) func(*Checker, context.Context) []*scope {
	return func(*Checker, context.Context) []*scope { return []*scope{{heading: heading}} }
}

// hintDefs are the hints' shared parts. An installation found by its Helm release is
// changed with helm upgrade; one without (deploy/'s kustomization) with kubectl.
const hintDefs = `
{{- define "upgrade"}}{{if .Release}}helm upgrade {{.Release}} {{.Chart}} -n {{.ReleaseNamespace}} --reuse-values{{else}}kubectl apply -k deploy/{{end}}{{end}}
{{- define "install"}}{{if .Release}}helm upgrade {{.Release}} {{.Chart}} -n {{.ReleaseNamespace}} --reuse-values{{else if .Config}}kubectl apply -k deploy/   (with cert-manager installed){{else}}helm upgrade --install habring {{.Chart}} -n habring-system --create-namespace
(or kubectl apply -k deploy/ with cert-manager installed){{end}}{{end}}
{{- define "can-i"}}kubectl auth can-i {{.Verb}} {{.Resource}}{{with .Namespace}} -n {{.}}{{end}}   (habring check needs to read it){{end}}`

// catalogue is every check, in the order they run. The --pod explanation is podChecks.
var catalogue = compile([]Category{
	{Name: "kubernetes-api", scopes: once("kubernetes-api"), Checks: []Check{{
		ID: "kubernetes-api.reachable", Description: "the Kubernetes API answers with this kubeconfig",
		Hint:     "kubectl{{with .Context}} --context {{.}}{{end}} cluster-info   (is the API server up, and is the kubeconfig's context the cluster you mean?)",
		Severity: Error, Fatal: true, Retry: true, run: (*Checker).checkAPI,
	}}},
	{Name: "habring-install", scopes: once("habring-install"), Checks: []Check{{
		ID: "install.webhook-configuration", Description: "a MutatingWebhookConfiguration has habring's webhook " + WebhookName,
		Hint: `{{if .Verb}}{{template "can-i" .}}{{else}}{{template "install" .}}{{end}}`, Severity: Error, Fatal: true, run: (*Checker).checkInstalled,
	}, {
		ID: "install.single", Description: "habring is installed once: two installations inject the same pods twice",
		Hint:     "uninstall all but one: helm uninstall <release> -n <namespace>, or kubectl delete mutatingwebhookconfiguration <name>",
		Severity: Warning, run: (*Checker).checkSingle,
	}, {
		ID: "install.endpoints", Description: "the webhook's Service has a ready endpoint",
		Hint:     `{{if .Verb}}{{template "can-i" .}}{{else if .Selector}}kubectl -n {{.ServiceNamespace}} get pods -l {{.Selector}}; kubectl -n {{.ServiceNamespace}} describe pods -l {{.Selector}}{{else}}{{template "install" .}}{{end}}`,
		Severity: Error, Retry: true, run: (*Checker).checkEndpoints,
	}, {
		ID: "install.ca-bundle", Description: "the webhook's caBundle holds a CA certificate",
		Hint: "cert-manager: kubectl -n cert-manager logs deploy/cert-manager-cainjector (it fills caBundle from cert-manager.io/inject-ca-from)\n" +
			"without cert-manager: {{if .Release}}helm upgrade {{.Release}} {{.Chart}} -n {{.ReleaseNamespace}} --reuse-values --set-file tls.caBundle=<CA PEM file>{{else}}put the CA's PEM, base64, in the caBundle of MutatingWebhookConfiguration {{.Config}}{{end}}",
		Severity: Error, Retry: true, run: (*Checker).checkCABundle,
	}, {
		ID: "install.serving-certificate", Description: "the caBundle verifies the certificate the webhook serves, for its Service's name",
		Hint: "cert-manager: kubectl -n cert-manager logs deploy/cert-manager-cainjector (it fills caBundle from cert-manager.io/inject-ca-from)\n" +
			"without cert-manager: {{if .Release}}helm upgrade {{.Release}} {{.Chart}} -n {{.ReleaseNamespace}} --reuse-values --set-file tls.caBundle=<CA PEM file>{{else}}put the PEM of the CA that signed the serving certificate, base64, in the caBundle of MutatingWebhookConfiguration {{.Config}}{{end}}",
		Severity: Error, Retry: true, run: (*Checker).checkServingCertificate,
	}, {
		ID: "install.certificate-validity", Description: "the serving certificate is valid for longer than --min-cert-validity",
		Hint: "cert-manager: kubectl{{with .ServiceNamespace}} -n {{.}}{{end}} describe certificate   (is it Ready? is renewal failing?)\n" +
			"without cert-manager: replace tls.crt and tls.key in the webhook's Secret; the webhook reloads them",
		Severity: Error, run: (*Checker).checkCertificateValidity,
	}, {
		ID: "install.failure-policy", Description: "the webhook's failurePolicy is Fail: a ring pod created while habring is unreachable must not start a ring of its own",
		Hint:     `{{if .Release}}helm upgrade {{.Release}} {{.Chart}} -n {{.ReleaseNamespace}} --reuse-values --set webhook.failurePolicy=Fail{{else}}kubectl patch mutatingwebhookconfiguration {{.Config}} --type=json -p '[{"op":"replace","path":"/webhooks/{{.Index}}/failurePolicy","value":"Fail"}]'{{end}}`,
		Severity: Warning, run: (*Checker).checkFailurePolicy,
	}, {
		ID: "install.namespace-selector", Description: "the webhook's namespaceSelector parses",
		Hint: `{{template "install" .}}`, Severity: Error, Fatal: true, run: (*Checker).checkNamespaceSelector,
	}, {
		ID: "install.labeler-role", Description: "the labeler's ClusterRole grants patch on pods and update on leases",
		Hint: `{{template "install" .}}{{if .Release}} --set labeler.rbac=true{{end}}`, Severity: Error, run: (*Checker).checkLabelerRole,
	}, {
		ID: "install.labeler-role-lease-watch", Description: "the labeler's ClusterRole grants list and watch on leases: a new leader's labeler need not wait out a dead holder's Lease",
		Hint: `{{template "upgrade" .}}`, Severity: Warning, run: (*Checker).checkLabelerRoleWatch,
	}, {
		ID: "install.labeler-role-events", Description: "the labeler's ClusterRole grants create on events: the labelers' Events, and this check's view of their denials",
		Hint: `{{template "upgrade" .}}`, Severity: Warning, run: (*Checker).checkLabelerRoleEvents,
	}, {
		ID: "install.labeler-policies", Description: "the labeler's ValidatingAdmissionPolicies and their bindings exist: a ring pod's credentials change only its own role label and Leases",
		Hint: `{{template "install" .}}{{if .Release}} --set labeler.policy=true{{end}}`, Severity: Error, run: (*Checker).checkLabelerPolicies,
	}}},
	{Name: "namespaces", scopes: once("namespaces"), Checks: []Check{{
		ID: "namespaces.readable", Description: "the namespaces to check can be read (--namespace exists)",
		Hint: `{{if .Verb}}{{template "can-i" .}}{{else}}kubectl get namespaces{{end}}`, Severity: Error, Fatal: true, run: (*Checker).checkNamespacesReadable,
	}, {
		ID: "namespaces.selected", Description: "the webhook selects a namespace",
		Hint:     `{{if .Labels}}kubectl label namespace <namespace> {{.Labels}}{{else}}widen the webhook's namespaceSelector{{if .Release}} (the chart's value webhook.namespaceSelector, release {{.Release}}){{end}}{{end}}`,
		Severity: Warning, Fatal: true, run: (*Checker).checkNamespacesSelected,
	}}},
	{Name: "namespace", scopes: (*Checker).namespaceScopes, Checks: []Check{{
		ID: "namespace.injection", Description: "the webhook selects the namespace",
		Hint:     `{{if .Labels}}kubectl label namespace {{.Namespace}} {{.Labels}}{{else}}run the workload in a namespace the webhook selects{{end}}`,
		Severity: Error, run: (*Checker).checkNamespaceInjection,
	}, {
		ID: "namespace.ring-workloads", Description: "the namespace's StatefulSets, Deployments and pods can be read",
		Hint: `{{template "can-i" .}}`, Severity: Error, run: (*Checker).checkRingWorkloads,
	}, {
		ID: "namespace.labeler-rolebinding", Description: "every service account whose pods run the labeler is bound to the labeler's ClusterRole",
		Hint:     `{{if .Verb}}{{template "can-i" .}}{{else}}kubectl -n {{.Namespace}} create rolebinding habring-labeler-{{.ServiceAccount}} --clusterrole={{.Role}} --serviceaccount={{.Namespace}}:{{.ServiceAccount}}{{end}}`,
		Severity: Error, run: (*Checker).checkRoleBinding,
	}, {
		ID: "namespace.labeler-denials", Description: "no labeler was denied by the API server in the last " + deniedWithin.String() + " (its HabringDenied Events)",
		Hint: `{{if .Verb}}{{template "can-i" .}}{{else}}{{.Fix}}
the labeler's log: kubectl -n {{.Namespace}} logs {{.Pod}} -c ` + contract.LabelerContainerName + `{{end}}`,
		Severity: Error, Retry: true, run: (*Checker).checkLabelerDenials,
	}, {
		ID: "namespace.pods-injected", Description: "every pod of a ring workload is injected, or the webhook would leave it alone now",
		Hint:     podHint,
		Severity: Error, run: (*Checker).checkPodsInjected,
	}, {
		ID: "namespace.pods-left-out", Description: "no pod of a ring workload is left out of its ring (opted out, no ring owner, its owner gone)",
		Hint:     podHint,
		Severity: Warning, run: (*Checker).checkPodsLeftOut,
	}}},
	{Name: "ring", scopes: (*Checker).ringScopes, Checks: []Check{{
		ID: "ring.pods-ready", Description: "every injected pod of the ring is ready",
		Hint:     "kubectl -n {{.Namespace}} get pods -l " + contract.LabelRing + "={{.Ring}}; kubectl -n {{.Namespace}} describe pod {{.Pod}}",
		Severity: Warning, Retry: true, run: (*Checker).checkRingPods,
	}, {
		ID: "ring.dead-members", Description: "no dead member counts against a service group's quorum",
		Hint: "if they are gone for good, from any Supervisor of the ring (kubectl -n {{.Namespace}} exec {{.Pod}} -- ...):\n{{.Depart}}", Severity: Error,
		run: (*Checker).checkDeadMembers,
	}, {
		ID: "ring.one-leader", Description: "at most one pod of a service group is labelled leader",
		Hint: "which labeler holds the Lease: kubectl -n {{.Namespace}} get leases; its log: kubectl -n {{.Namespace}} logs <pod> -c " + contract.LabelerContainerName +
			"\nlabels set by hand: kubectl -n {{.Namespace}} label pod {{.Pods}} " + contract.LabelRole + "-",
		Severity: Error, Retry: true, run: (*Checker).checkOneLeader,
	}, {
		ID: "ring.leader-labelled", Description: "a service group with an elected leader has it labelled, so a Service can select it",
		Hint:     "kubectl -n {{.Namespace}} get events --field-selector source=" + labeler.EventComponent + "; kubectl -n {{.Namespace}} logs {{.Pod}} -c " + contract.LabelerContainerName,
		Severity: Warning, Retry: true, run: (*Checker).checkLeaderLabelled,
	}}},
})

// podChecks are `habring check --pod`: why one pod was, or was not, injected.
var podChecks = compile([]Category{{Name: "pod", scopes: (*Checker).podScope, Checks: []Check{{
	ID: "pod.exists", Description: "the pod exists", Hint: "kubectl -n {{.Namespace}} get pods", Severity: Error, Fatal: true, run: (*Checker).checkPodExists,
}, {
	ID: "pod.injected", Description: "the pod is injected, or the webhook would leave it alone now", Hint: podHint, Severity: Error, run: (*Checker).checkPodInjected,
}, {
	ID: "pod.left-out", Description: "the pod is not left out of a ring (opted out, no ring owner, its owner gone)", Hint: podHint, Severity: Warning, run: (*Checker).checkPodLeftOut,
}}}})

// podHint is what fixes a ring pod without habitat.sh/status: injected, by .Case.
const podHint = `{{if eq .Case "annotation"}}fix the annotation on {{.Owner}}
{{- else if eq .Case "namespace"}}kubectl label namespace {{.Namespace}} {{.Labels}}, then kubectl -n {{.Namespace}} delete pod {{.Pod}}
{{- else if eq .Case "excluded"}}run the workload in a namespace the webhook selects
{{- else if eq .Case "install"}}{{template "install" .}}
{{- else if eq .Case "opted-out"}}remove the annotation ` + contract.AnnotationInject + ` from {{.Owner}}'s pod template to inject it
{{- else if eq .Case "recreate"}}kubectl -n {{.Namespace}} delete pod {{.Pod}}   (its controller creates it again, through the webhook)
{{- else if eq .Case "orphan"}}nothing to do: the garbage collector deletes a pod whose owner is gone (kubectl -n {{.Namespace}} delete pod {{.Pod}} to do it now)
{{- else if eq .Case "no-owner"}}to put it on a ring, run it under a StatefulSet or Deployment annotated ` + contract.AnnotationRing + `
{{- else if eq .Case "no-ring"}}kubectl -n {{.Namespace}} annotate {{.Owner}} ` + contract.AnnotationRing + `=<ring>   (then its pods are created again through the webhook)
{{- end}}`

func compile(cats []Category) []Category {
	defs := template.Must(template.New("defs").Parse(hintDefs))
	for i := range cats {
		for j := range cats[i].Checks {
			chk := &cats[i].Checks[j]
			chk.hint = template.Must(template.Must(defs.Clone()).New(chk.ID).Option("missingkey=error").Parse(chk.Hint))
		}
	}
	return cats
}
