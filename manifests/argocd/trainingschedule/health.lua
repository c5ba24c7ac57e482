-- ArgoCD health of a TrainingSchedule (training.wastedetection.io/v1alpha1), from the status the operator writes.
local hs = {}
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: no run is created"
  return hs
end
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to look at the schedule"
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to see the changed spec"
  return hs
end
for _, condition in ipairs(status.conditions) do
  if condition.type == "Ready" and condition.status == "False" then
    hs.status = "Degraded"
    hs.message = condition.reason .. ": " .. (condition.message or "")
    return hs
  end
end
if status.lastRun ~= nil and status.lastRun.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "The last run " .. status.lastRun.name .. " failed"
  return hs
end
hs.status = "Healthy"
local parts = {}
if status.pending ~= nil and status.pending ~= "-" then
  table.insert(parts, "new samples " .. status.pending)
end
if status.lastRun ~= nil then
  table.insert(parts, "last run " .. status.lastRun.text)
end
if status.nextScheduleTime ~= nil then
  table.insert(parts, "next " .. status.nextScheduleTime)
end
hs.message = table.concat(parts, ", ")
return hs
