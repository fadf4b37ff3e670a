% if waiting is None:
<div class="notice problem" role="status"><p>The invalid queue <code>{{invalid_queue}}</code> does not answer now, so the console cannot tell how many messages a re-drive would move. Try again shortly.</p></div>
<p><a href="{{base}}rejections">Back to the rejections</a></p>
% elif waiting == 0:
<p class="empty">No message waits on the invalid queue <code>{{invalid_queue}}</code>: there is nothing to re-drive.</p>
<p><a href="{{base}}rejections">Back to the rejections</a></p>
% else:
<p>This moves <strong>{{'about ' if approximate else ''}}{{figure(waiting)}} message{{'' if waiting == 1 else 's'}}</strong> from the invalid queue <code>{{invalid_queue}}</code> back to the enrolment queue <code>{{enrolment_queue}}</code>. The worker then saves each one, or sets it aside again with fresh reasons.</p>
% if in_flight:
<p class="hint">{{figure(in_flight)}} more {{'is' if in_flight == 1 else 'are'}} being read on the invalid queue now and {{'is' if in_flight == 1 else 'are'}} not moved.</p>
% end
<p class="hint">Put the cause right first (the rejections list their reasons), or the messages come straight back.</p>
<form class="confirm" method="post" action="{{base}}rejections/redrive-all">
<input type="hidden" name="csrf_token" value="{{csrf_token}}">
<button type="submit" class="danger">Re-drive {{'about ' if approximate else ''}}{{figure(waiting)}} message{{'' if waiting == 1 else 's'}}</button>
<a href="{{base}}rejections">Cancel</a>
</form>
% end
