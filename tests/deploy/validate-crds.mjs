// Validates the custom resources of a rendered chart against their CRD schemas, and hands every
// document on as JSON so that the Python tests need no YAML parser.
//
//   helm template ... | node tests/deploy/validate-crds.mjs .tools/npm > manifests.json
//
// The schemas come from the @kubernetes-models packages (generated from the Prometheus Operator
// and KEDA CRDs), installed by scripts/install-tools.sh. Prints
// {"documents": [...], "validated": ["PodMonitor/name", ...]} and exits 0, or prints each
// invalid resource with its errors to stderr and exits 1. A custom resource kind this script
// does not know is an error too: it would otherwise go unchecked.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const npmDir = process.argv[2];
if (!npmDir) {
  console.error("usage: validate-crds.mjs NPM_PREFIX < manifests.yaml");
  process.exit(2);
}
const modules = join(npmDir, "node_modules");
const load = async (path) => import(pathToFileURL(join(modules, path)).href);

// apiVersion/kind -> module file and export name.
const MODELS = {
  "monitoring.coreos.com/v1/PodMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor.js", "PodMonitor"],
  "monitoring.coreos.com/v1/ServiceMonitor": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js", "ServiceMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": ["@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule.js", "PrometheusRule"],
  "keda.sh/v1alpha1/ScaledObject": ["@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.js", "ScaledObject"],
  "keda.sh/v1alpha1/TriggerAuthentication": ["@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication.js", "TriggerAuthentication"],
};
// Groups whose kinds kubernetes-validate checks (the built-in API).
const BUILT_IN = /^(v1|apps\/v1|policy\/v1|batch\/v1|rbac\.authorization\.k8s\.io\/v1|networking\.k8s\.io\/v1|autoscaling\/v2)$/;

const YAML = await load("yaml/dist/index.js");
const stream = YAML.parseAllDocuments(readFileSync(0, "utf8"));
const documents = [];
const validated = [];
let failed = false;
for (const doc of stream) {
  if (doc.errors.length > 0) {
    console.error(`YAML error: ${doc.errors.map(String).join("; ")}`);
    failed = true;
    continue;
  }
  const resource = doc.toJS();
  if (resource === null) continue;
  documents.push(resource);
  const key = `${resource.apiVersion}/${resource.kind}`;
  const name = `${resource.kind}/${resource.metadata?.name}`;
  if (BUILT_IN.test(resource.apiVersion)) continue;
  const model = MODELS[key];
  if (!model) {
    console.error(`${name}: no schema known for ${key}`);
    failed = true;
    continue;
  }
  const Model = (await load(model[0]))[model[1]];
  try {
    new Model(resource).validate();
    validated.push(name);
  } catch (error) {
    console.error(`${name} is invalid: ${error.message}`);
    for (const detail of error.errors ?? []) console.error(`  ${JSON.stringify(detail)}`);
    failed = true;
  }
}
process.stdout.write(JSON.stringify({ documents, validated }));
process.exit(failed ? 1 : 0);
