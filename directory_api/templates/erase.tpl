% if erasure.empty:
<p>Nothing of this supplier's personal data is left to erase.</p>
<p><a href="{{base}}enrolments/{{enrolment.id}}">Back to enrolment {{enrolment.id}}</a></p>
% else:
<div class="notice problem" role="alert">
<p>This removes the personal data of the supplier of enrolment {{enrolment.id}} (company number <strong>{{company_number or '-'}}</strong>, sso id <strong>{{'-' if sso_id is None else sso_id}}</strong>), for good. It cannot be undone.</p>
</div>
<h2>What will go</h2>
<table>
<tbody>
% for table in tables:
<tr><th scope="row">{{labels[table]}}</th><td class="number">{{erasure.removed[table]}}</td></tr>
% end
</tbody>
</table>
<p class="hint">The enrolment row stays, with its id, times and message id, marked erased. The same company may then enrol again.</p>
<form class="erase" method="post" action="{{base}}enrolments/{{enrolment.id}}/erase">
<input type="hidden" name="csrf_token" value="{{csrf_token}}">
<button type="submit" class="danger">Erase this personal data</button>
<a href="{{base}}enrolments/{{enrolment.id}}">Cancel</a>
</form>
% end
