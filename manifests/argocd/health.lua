-- ArgoCD health of a TrainingRun (training.wastedetection.io/v1alpha1), from the phase the operator writes.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to start the run"
  return hs
end
local status = obj.status
local function detail(default)
  if status.reason ~= nil and status.reason ~= "" and status.message ~= nil and status.message ~= "" then
    return status.reason .. ": " .. status.message
  end
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return default
end
if status.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = status.message or "Training succeeded"
elseif status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = detail("Training failed")
elseif status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = detail("The run is suspended")
elseif status.phase == "Running" then
  hs.status = "Progressing"
  if status.progress ~= nil and status.progress.text ~= nil then
    hs.message = "Training " .. status.progress.text
  else
    hs.message = detail("Training")
  end
else
  hs.status = "Progressing"
  hs.message = detail("Waiting for the training Pod")
end
return hs
